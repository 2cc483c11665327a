import { describe, expect, it } from '@jest/globals';
import type { Readable } from 'node:stream';
import { inOrder, Lines, JsonlUpload, pagesAhead } from '../../activities/batch/output';
import type { ObjectRef } from '../../common/objectstore';

/** A store's putStream that reads the body as S3 would, keeping only its size and a hash-free sample of it. */
function countingStore(fail?: { afterBytes: number }) {
  const stored: { ref: ObjectRef; bytes: number; head: string; contentType?: string }[] = [];
  const aborted: ObjectRef[] = [];
  return {
    stored,
    aborted,
    async putStream(ref: ObjectRef, body: Readable, contentType?: string) {
      let bytes = 0;
      let head = '';
      try {
        for await (const chunk of body as AsyncIterable<Buffer>) {
          if (head.length < 64) head += chunk.subarray(0, 64).toString('utf8');
          bytes += chunk.length;
          if (fail && bytes > fail.afterBytes) throw new Error('the store went away');
        }
      } catch (err) {
        aborted.push(ref);
        throw err;
      }
      stored.push({ ref, bytes, head, ...(contentType ? { contentType } : {}) });
    },
  };
}

const ref = { bucket: 'b', key: 'batches/files/x.jsonl' };

const linesOf = (...buffers: Buffer[]) => {
  const lines = new Lines();
  for (const b of buffers) lines.add(b);
  return lines;
};

describe('Lines', () => {
  it("joins a page's consecutive lines into one run without copying them, and starts a run at a gap", () => {
    const page = Buffer.from('{"a":1}\n{"b":2}\n{"c":3}\n{"d":4}\n');
    const [a, b, c, d] = [0, 8, 16, 24].map((at) => page.subarray(at, at + 8)) as [Buffer, Buffer, Buffer, Buffer];
    // Its own memory: a small Buffer.from would share Node's pool with the page, maybe right after it (where joining the
    // two would be right all the same).
    const other = Buffer.from(new TextEncoder().encode('{"e":5}\n').buffer);
    const lines = linesOf(a, b, d, other);
    expect(lines.count).toBe(4);
    expect(lines.runs.map((r) => r.toString())).toEqual(['{"a":1}\n{"b":2}\n', '{"d":4}\n', '{"e":5}\n']);
    // Views of the page, not copies.
    expect(lines.runs[0]!.buffer).toBe(page.buffer);
    expect(linesOf(a, b, c, d).runs).toEqual([page]);
  });
});

describe('JsonlUpload', () => {
  it('writes 600 MiB through a store that keeps none of it, holding one line at a time', async () => {
    const store = countingStore();
    const file = new JsonlUpload(store, ref);
    // 600 lines of 1 MiB: the same line each time, so the test itself holds 1 MiB whatever it writes.
    const line = Buffer.from(`{"custom_id":"r0","body":"${'x'.repeat((1 << 20) - 30)}"}\n`);
    for (let page = 0; page < 60; page++) await file.write(linesOf(...Array.from({ length: 10 }, () => line)));
    expect(await file.end()).toBe(true);
    expect(file.lines).toBe(600);
    expect(file.bytes).toBe(600 * line.length);
    expect(store.stored).toEqual([
      {
        ref,
        bytes: file.bytes,
        head: expect.stringMatching(/^\{"custom_id":"r0","body":"x/),
        contentType: 'application/jsonl',
      },
    ]);
  });

  it('makes no object when nothing is written', async () => {
    const store = countingStore();
    const file = new JsonlUpload(store, ref);
    await file.write(new Lines());
    expect(await file.end()).toBe(false);
    expect(store.stored).toEqual([]);
  });

  it("throws the store's failure from the write that waits on it, and abort ends the upload", async () => {
    const store = countingStore({ afterBytes: 1 << 20 });
    const file = new JsonlUpload(store, ref);
    const line = Buffer.from(`${'y'.repeat(64 << 10)}\n`);
    let thrown: unknown;
    try {
      for (let i = 0; i < 1000; i++) await file.write(linesOf(line));
    } catch (err) {
      thrown = err;
    }
    expect((thrown as Error).message).toBe('the store went away');
    await file.abort(thrown as Error);
    expect(store.aborted).toEqual([ref]);
    expect(store.stored).toEqual([]);
  });

  it('an abort before the store fails drops the upload too', async () => {
    const store = countingStore();
    const file = new JsonlUpload(store, ref);
    await file.write(linesOf(Buffer.from('{"a":1}\n')));
    await file.abort(new Error('a page could not be read'));
    expect(store.aborted).toEqual([ref]);
    expect(store.stored).toEqual([]);
  });
});

describe('inOrder', () => {
  it('yields every read in order, with at most `ahead` started and not yet taken', async () => {
    const started: number[] = [];
    const pending = new Map<number, () => void>();
    const read = (i: number) =>
      new Promise<string>((resolve) => {
        started.push(i);
        pending.set(i, () => resolve(`page ${i}`));
      });
    const pages = inOrder(10, 3, read);
    const taken: [number, string][] = [];
    const consumer = (async () => {
      for await (const p of pages) taken.push(p);
    })();
    // Later reads end first: the consumer still takes page 0 first.
    await Promise.resolve();
    expect(started).toEqual([0, 1, 2]);
    pending.get(2)!();
    pending.get(1)!();
    await new Promise((r) => setImmediate(r));
    expect(taken).toEqual([]);
    for (let i = 0; i < 10; i++) {
      await new Promise((r) => setImmediate(r));
      expect(started.length - taken.length).toBeLessThanOrEqual(3);
      pending.get(i)!();
    }
    await consumer;
    expect(taken).toEqual(Array.from({ length: 10 }, (_, i) => [i, `page ${i}`]));
    expect(started).toEqual(Array.from({ length: 10 }, (_, i) => i));
  });

  it('throws a failed read at its turn, after the pages before it', async () => {
    // Page 3 fails at once, long before the consumer reaches it.
    const read = async (i: number) => {
      if (i === 3) throw new Error('page 3 is gone');
      await new Promise((r) => setImmediate(r));
      return i;
    };
    const taken: number[] = [];
    await expect(
      (async () => {
        for await (const [i] of inOrder(6, 4, read)) taken.push(i);
      })(),
    ).rejects.toThrow('page 3 is gone');
    expect(taken).toEqual([0, 1, 2]);
  });

  it('reads nothing for no pages', async () => {
    const taken: unknown[] = [];
    for await (const p of inOrder(0, 8, () => Promise.reject(new Error('never read')))) taken.push(p);
    expect(taken).toEqual([]);
  });
});

describe('pagesAhead', () => {
  const MiB = 1024 * 1024;
  it('reads the most ahead when pages are small, fewer as they grow, and always one', () => {
    expect(pagesAhead([400_000, 420_000], 8, 64 * MiB)).toBe(8);
    expect(pagesAhead([], 8, 64 * MiB)).toBe(8);
    expect(pagesAhead([1 * MiB, 32 * MiB, 2 * MiB], 8, 64 * MiB)).toBe(2);
    expect(pagesAhead([619 * MiB], 8, 64 * MiB)).toBe(1);
  });
});
