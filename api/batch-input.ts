import { BATCH_ENDPOINTS, BATCH_PAGE_LINES } from '../contracts/batch';
import { BadRequestError } from '../common/errors';
import { nestsTooDeep, TOO_DEEP } from './json-depth';
import { isStorableText } from '../common/storable-text';

export const MAX_FILE_BYTES = 200 * 1024 * 1024;
export const MAX_FILE_LINES = 50_000;
const MAX_CUSTOM_ID = 512;
/**
 * OpenAI's limit on a batch's embedding inputs, all its lines together. An answer grows with its inputs (a vector each)
 * and a page's answers are held until its object is written: without it, a 200 MB file of lines of thousands of short
 * inputs would ask for gigabytes of vectors per page, held in the memory of a worker that serves every tenant.
 */
export const MAX_EMBEDDING_INPUTS = 50_000;

/** The inputs of one embeddings request: a text or one text's tokens is one, a list of either one each. */
const inputsOf = (input: unknown): number =>
  Array.isArray(input) && !input.every((x) => typeof x === 'number') ? input.length : 1;

export interface CheckedInput {
  lineCount: number;
  /** The byte offset of each page's first line (BATCH_PAGE_LINES lines a page). */
  pageOffsets: number[];
  urls: string[];
}

/** The line's own problem, as a 400 naming the line (1-based) and the field. */
const refuse = (line: number, field: string, why: string) =>
  new BadRequestError(`line ${line}: ${field} ${why}`, 'body.file', { line, lineField: field });

/**
 * Checks a batch input file as OpenAI's Batch API takes it, as it arrives (the upload is never held whole): one JSON
 * object a line, each with a `custom_id` no other line has, `method` POST, a `url` of a batch endpoint and a `body`
 * naming its `model` (not streamed), no longer than the gateway takes a body. The first bad line is refused by number
 * and field; a trailing newline ends the last line, and no other line is empty. Holds only the line in progress.
 */
export class BatchInputChecker {
  private readonly seen = new Set<string>();
  private readonly urls = new Set<string>();
  private readonly pageOffsets: number[] = [];
  private lines = 0;
  private embeddingInputs = 0;
  /** Bytes of the lines before the one in progress (with their newlines): where it starts. */
  private done = 0;
  private partial: Buffer[] = [];
  private partialBytes = 0;

  constructor(private readonly maxLineBytes: number) {}

  /** The next bytes of the file; throws the 400 of the first bad line it completes. */
  write(chunk: Buffer): void {
    for (let start = 0; start < chunk.length;) {
      const nl = chunk.indexOf(0x0a, start);
      this.hold(chunk.subarray(start, nl < 0 ? chunk.length : nl));
      if (nl < 0) return;
      this.endLine(1);
      start = nl + 1;
    }
  }

  /** The file has ended: its last line is checked, and what the batch needs of the file is returned. */
  end(): CheckedInput {
    if (this.partialBytes > 0) this.endLine(0);
    if (this.lines === 0) throw new BadRequestError('the file has no lines', 'body.file');
    return { lineCount: this.lines, pageOffsets: this.pageOffsets, urls: [...this.urls] };
  }

  private hold(bytes: Buffer): void {
    if (bytes.length === 0) return;
    this.partialBytes += bytes.length;
    if (this.partialBytes > this.maxLineBytes)
      throw refuse(
        this.lines + 1,
        'the line',
        `is longer than ${this.maxLineBytes} bytes, the most the gateway takes as a request body`,
      );
    this.partial.push(bytes);
  }

  private endLine(newline: number): void {
    const n = ++this.lines;
    if (n > MAX_FILE_LINES)
      throw new BadRequestError(`the file has more than ${MAX_FILE_LINES} lines`, 'body.file', { line: n });
    if ((n - 1) % BATCH_PAGE_LINES === 0) this.pageOffsets.push(this.done);
    const text = Buffer.concat(this.partial, this.partialBytes).toString('utf8').trim();
    this.done += this.partialBytes + newline;
    this.partial = [];
    this.partialBytes = 0;
    if (!text) throw refuse(n, 'the line', 'is empty');
    let line: unknown;
    try {
      line = JSON.parse(text);
    } catch (err) {
      throw refuse(n, 'the line', `is not JSON (${(err as Error).message})`);
    }
    if (!line || typeof line !== 'object' || Array.isArray(line)) throw refuse(n, 'the line', 'is not a JSON object');
    if (nestsTooDeep(line, text)) throw refuse(n, 'the line', TOO_DEEP);
    const { custom_id: id, method, url, body } = line as Record<string, unknown>;
    if (typeof id !== 'string' || !id || id.length > MAX_CUSTOM_ID)
      throw refuse(n, 'custom_id', `must be a string of 1 to ${MAX_CUSTOM_ID} characters`);
    // Kept as a row's key while the batch runs (PostgreSQL's text takes no NUL; an unpaired surrogate comes back changed).
    if (!isStorableText(id)) throw refuse(n, 'custom_id', 'holds a NUL character or an unpaired UTF-16 surrogate');
    if (this.seen.has(id)) throw refuse(n, 'custom_id', `'${id}' is used by an earlier line`);
    this.seen.add(id);
    if (method !== 'POST') throw refuse(n, 'method', 'must be POST');
    if (!(BATCH_ENDPOINTS as readonly unknown[]).includes(url))
      throw refuse(n, 'url', `must be one of ${BATCH_ENDPOINTS.join(', ')}`);
    this.urls.add(url as string);
    if (!body || typeof body !== 'object' || Array.isArray(body)) throw refuse(n, 'body', 'must be a JSON object');
    const { model, stream } = body as Record<string, unknown>;
    if (typeof model !== 'string' || !model) throw refuse(n, 'body.model', 'must name a model');
    if (stream === true) throw refuse(n, 'body.stream', 'cannot be true in a batch');
    if (url === '/v1/embeddings') {
      this.embeddingInputs += inputsOf((body as Record<string, unknown>).input);
      if (this.embeddingInputs > MAX_EMBEDDING_INPUTS)
        throw refuse(n, 'body.input', `takes the file past ${MAX_EMBEDDING_INPUTS} embedding inputs, a batch's most`);
    }
  }
}
