import { BATCH_ENDPOINTS, BATCH_PAGE_LINES } from '../contracts/batch';
import { BadRequestError } from '../common/errors';
import { nestsTooDeep, TOO_DEEP } from './json-depth';

export const MAX_FILE_BYTES = 200 * 1024 * 1024;
export const MAX_FILE_LINES = 50_000;
const MAX_CUSTOM_ID = 512;

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
 * Checks a batch input file as OpenAI's Batch API takes it: one JSON object a line, each with a `custom_id` no other
 * line has, `method` POST, a `url` of a batch endpoint and a `body` naming its `model` (not streamed). The first bad
 * line is refused by number and field; a trailing newline ends the last line, and no other line is empty.
 */
export function checkBatchInput(content: Buffer): CheckedInput {
  if (content.length > MAX_FILE_BYTES)
    throw new BadRequestError(`the file has ${content.length} bytes; at most ${MAX_FILE_BYTES}`, 'body.file');
  const seen = new Set<string>();
  const urls = new Set<string>();
  const pageOffsets: number[] = [];
  let n = 0;
  for (let start = 0; start < content.length;) {
    const nl = content.indexOf(0x0a, start);
    const end = nl < 0 ? content.length : nl;
    n++;
    if (n > MAX_FILE_LINES)
      throw new BadRequestError(`the file has more than ${MAX_FILE_LINES} lines`, 'body.file', { line: n });
    if ((n - 1) % BATCH_PAGE_LINES === 0) pageOffsets.push(start);
    const text = content.subarray(start, end).toString('utf8').trim();
    start = end + 1;
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
    if (seen.has(id)) throw refuse(n, 'custom_id', `'${id}' is used by an earlier line`);
    seen.add(id);
    if (method !== 'POST') throw refuse(n, 'method', 'must be POST');
    if (!(BATCH_ENDPOINTS as readonly unknown[]).includes(url))
      throw refuse(n, 'url', `must be one of ${BATCH_ENDPOINTS.join(', ')}`);
    urls.add(url as string);
    if (!body || typeof body !== 'object' || Array.isArray(body)) throw refuse(n, 'body', 'must be a JSON object');
    const { model, stream } = body as Record<string, unknown>;
    if (typeof model !== 'string' || !model) throw refuse(n, 'body.model', 'must name a model');
    if (stream === true) throw refuse(n, 'body.stream', 'cannot be true in a batch');
  }
  if (n === 0) throw new BadRequestError('the file has no lines', 'body.file');
  return { lineCount: n, pageOffsets, urls: [...urls] };
}
