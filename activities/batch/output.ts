import { once } from 'node:events';
import { PassThrough } from 'node:stream';
import type { ObjectRef, ObjectStore } from '../../common/objectstore';

/**
 * `read(0)`, `read(1)`, ... `read(count - 1)` in that order, with up to `ahead` of them running or read and not yet
 * taken: what is held at once is a few pages, whatever the batch's size.
 */
export async function* inOrder<T>(
  count: number,
  ahead: number,
  read: (i: number) => Promise<T>,
): AsyncGenerator<[number, T]> {
  const started: Promise<T>[] = [];
  const start = (i: number) => {
    const p = read(i);
    // Taken in order below; one that fails before its turn must not be an unhandled rejection meanwhile.
    p.catch(() => undefined);
    started.push(p);
  };
  for (let i = 0; i < Math.min(ahead, count); i++) start(i);
  for (let i = 0; i < count; i++) {
    const value = await started[i]!;
    delete started[i];
    if (started.length < count) start(started.length);
    yield [i, value];
  }
}

/**
 * How many of a batch's pages the finish reads ahead: `most`, or as many of the largest as fit in `bytes` (at least
 * one). Each page is read whole; eight pages of 1,536-dimension embeddings (32 MB each, twice that while read) were most
 * of a worker's memory in the finish, and larger answers make larger pages.
 */
export function pagesAhead(pageBytes: readonly number[], most: number, bytes: number): number {
  const largest = pageBytes.reduce((a, b) => Math.max(a, b), 0);
  return Math.max(1, Math.min(most, Math.floor(bytes / Math.max(1, largest))));
}

/**
 * Lines on their way to one file: each a view of the page object it was read from. A line that follows the last one in
 * the same page extends its run, so a page whose lines all go to one file is written as one chunk, with no copy.
 */
export class Lines {
  readonly runs: Buffer[] = [];
  count = 0;

  /** `line` may hold several lines (`lines` of them), written as one. */
  add(line: Buffer, lines = 1): void {
    this.count += lines;
    const last = this.runs.at(-1);
    if (last && last.buffer === line.buffer && last.byteOffset + last.length === line.byteOffset)
      this.runs[this.runs.length - 1] = Buffer.from(last.buffer, last.byteOffset, last.length + line.length);
    else this.runs.push(line);
  }
}

/**
 * A JSONL object of a batch (a page's answers, an output or error file), sent to the object store as it is written, in
 * parts: one larger than the worker's memory, or than the longest string V8 makes (~512 MiB, which the objects joined
 * as one string had hit), is written all the same. The upload starts at the first write, so an object nothing was
 * written to is never made.
 */
export class JsonlUpload {
  private body: PassThrough | undefined;
  private stored: Promise<void> | undefined;
  bytes = 0;
  lines = 0;

  constructor(
    private readonly objects: Pick<ObjectStore, 'putStream'>,
    private readonly ref: ObjectRef,
  ) {}

  /** Appends the lines (JSONL, each ending in a newline), waiting while the store is behind. */
  async write(lines: Lines): Promise<void> {
    if (lines.count === 0) return;
    if (!this.body) {
      this.body = new PassThrough();
      this.stored = this.objects.putStream(this.ref, this.body, 'application/jsonl');
      // Awaited in end(), or raced below: a failed upload is thrown from there.
      this.stored.catch(() => undefined);
    }
    this.lines += lines.count;
    for (const run of lines.runs) {
      this.bytes += run.length;
      if (!this.body.write(run)) await Promise.race([once(this.body, 'drain'), this.stored]);
    }
  }

  /** Completes the upload; false when nothing was written (no file). */
  async end(): Promise<boolean> {
    if (!this.body) return false;
    this.body.end();
    await this.stored;
    return true;
  }

  /** Stops the upload without an object: its parts are dropped (putStream's contract for a body that fails). */
  async abort(err: Error): Promise<void> {
    if (!this.body) return;
    this.body.destroy(err);
    await this.stored?.catch(() => undefined);
  }
}
