import { hash } from 'node:crypto';
import type { BatchRef } from '../../contracts/batch';
import type { ObjectRef } from '../../common/objectstore';

const pageDir = (page: number) => String(page).padStart(6, '0');

/** Where a batch's page objects are: each holds its page's results until the batch's files are written. */
export const pagesPrefix = (b: BatchRef): string => `batches/${b.batchId}/pages/`;
/** A finished page's results in its lines' order. */
export const pageRef = (b: BatchRef, page: number): ObjectRef => ({
  bucket: b.bucket,
  key: `${pagesPrefix(b)}${pageDir(page)}.jsonl`,
});
/**
 * The ids of a batch's answers in the output, as OpenAI's `batch_req_…` (24 hex digits): the batch's hash, computed
 * once, then the line's number in the input file. Every attempt gives a line the same id (the input's content is
 * checked against its uploaded size, its custom_ids are unique), and no two lines of a batch share one; a sha256 of the
 * batch and custom_id per line was a visible share of a line's CPU.
 */
export const requestIdsOf = (batchId: string): ((lineNumber: number) => string) => {
  const prefix = `batch_req_${hash('sha256', batchId, 'hex').slice(0, 12)}`;
  return (n) => `${prefix}${n.toString(16).padStart(12, '0')}`;
};
