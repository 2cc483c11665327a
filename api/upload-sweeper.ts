import { knowledgePrefix, uploadsPrefix } from '../common/documents';
import type { Logger } from '../common/logger';
import type { ObjectStore } from '../common/objectstore';
import type { StorageScopeStore } from '../common/store/storage-scope';
import type { TenantStore } from '../common/store/tenants';
import { FILES_PREFIX } from '../contracts/batch';

/** Every replica sweeps this often; aborts from several at once are harmless (one wins, the others find none). */
const SWEEP_EVERY_MS = 3_600_000;
/** And once soon after it starts: replicas restarted more often than hourly (deploys) would otherwise never sweep. */
const FIRST_SWEEP_MS = 60_000;
/** Beyond the request timeout: the upload's last parts and its completion, and the clocks of the API and the store. */
const MARGIN_MS = 10 * 60_000;

/**
 * The API's streamed uploads (batch files, knowledge documents) go to the tenant's bucket in parts as they arrive. An
 * api process that dies mid-upload (killed, out of memory, its node gone) leaves the upload unfinished: S3 keeps its
 * parts, unseen and billed, until they are aborted; a bucket lifecycle rule would do it on AWS, but not on every store
 * (versitygw answers NotImplemented). An upload cannot outlive its request (API_REQUEST_TIMEOUT_MS): one under the
 * API's prefixes begun longer ago than that is abandoned, and aborted. Anything else in the bucket, such as the
 * tenant's own uploads with its S3 keys, is left alone.
 */
export function startUploadSweeper(deps: {
  tenants: Pick<TenantStore, 'listTenants'>;
  scopes: Pick<StorageScopeStore, 'bucketOf'>;
  objects: Pick<ObjectStore, 'abortUploadsBefore'>;
  requestTimeoutMs: number;
  logger: Logger;
}): { sweep(now?: number): Promise<number>; close(): Promise<void> } {
  let running: Promise<number> | undefined;
  const sweepAll = async (now: number) => {
    const before = new Date(now - deps.requestTimeoutMs - MARGIN_MS);
    let aborted = 0;
    let cursor: string | undefined;
    do {
      const page = await deps.tenants.listTenants({ limit: 500, ...(cursor ? { cursor } : {}) });
      for (const { id } of page.items) {
        const bucket = deps.scopes.bucketOf(id);
        const documents = knowledgePrefix(id);
        // A namespace's uploads only: a namespace is one path segment.
        const isUpload = (key: string) => key.startsWith(uploadsPrefix(id, key.slice(documents.length).split('/')[0]!));
        try {
          aborted += await deps.objects.abortUploadsBefore(bucket, FILES_PREFIX, before);
          aborted += await deps.objects.abortUploadsBefore(bucket, documents, before, isUpload);
        } catch (err) {
          // One tenant's store trouble does not keep the others' uploads.
          deps.logger.warn({ err, tenantId: id }, "sweeping a tenant's unfinished uploads failed");
        }
      }
      cursor = page.nextCursor ?? undefined;
    } while (cursor);
    if (aborted > 0) deps.logger.info({ aborted }, 'aborted uploads that an api process left unfinished');
    return aborted;
  };
  const sweep = (now = Date.now()) => {
    running ??= sweepAll(now).finally(() => (running = undefined));
    return running;
  };
  const sweepNow = () =>
    void sweep().catch((err: unknown) => deps.logger.warn({ err }, 'sweeping unfinished uploads failed'));
  const first = setTimeout(sweepNow, FIRST_SWEEP_MS).unref();
  const timer = setInterval(sweepNow, SWEEP_EVERY_MS).unref();
  return {
    sweep,
    async close() {
      clearTimeout(first);
      clearInterval(timer);
      await running?.catch(() => undefined);
    },
  };
}
