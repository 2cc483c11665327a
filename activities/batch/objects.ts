import { hash } from 'node:crypto';
import type { BatchRef } from '../../contracts/batch';
import type { ObjectRef } from '../../common/objectstore';

const pageDir = (page: number) => String(page).padStart(6, '0');
// The one-shot hash: a Hash object per line was a visible share of a batch line's CPU.
const hashOf = (batchId: string, customId: string) => hash('sha256', `${batchId}\0${customId}`, 'hex');

/** A finished page's results in its lines' order. */
export const pageRef = (b: BatchRef, page: number): ObjectRef => ({
  bucket: b.bucket,
  key: `batches/${b.batchId}/pages/${pageDir(page)}.jsonl`,
});
/** The id of a line's answer in the output, as OpenAI's `batch_req_…`. */
export const requestIdOf = (batchId: string, customId: string): string =>
  `batch_req_${hashOf(batchId, customId).slice(0, 24)}`;
