import { createHash } from 'node:crypto';
import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import { uploadsPrefix } from '../../common/documents';
import type { EmbedderRegistry } from '../../common/knowledge';
import { objectUri, parseObjectUri, type ObjectStore } from '../../common/objectstore';
import type { KnowledgeStore } from '../../common/store/knowledge';
import type { StorageScopeStore } from '../../common/store/storage-scope';
import { requireInScope } from '../storage/scope';
import { IngestionFailures, type DocumentFailure, type IngestionInput } from '../../contracts/ingestion';
import { StorageFailures } from '../../contracts/storage';
import { collectionName, pointId, type VectorPoint, type VectorStore } from '../../common/vectors';
import { chunkBlocks, type Chunk } from '../parsing/chunker';
import { parseBuiltin, UnparseableDocumentError, type Block } from '../parsing/parsers';
import { ManifestCache } from './manifest-cache';
import { ingestionChunksTotal, ingestionDocumentsTotal } from './metrics';

export interface ManifestEntry {
  documentId: string;
  uri: string;
  sizeBytes: number;
}

export interface BatchResult {
  done: number;
  skippedUnchanged: number;
  failures: DocumentFailure[];
  chunksWritten: number;
}

/** Where a heartbeat left a batch, so a retry (e.g. after the worker was killed) resumes there. */
interface BatchProgress extends BatchResult {
  next: number;
}

export interface KnowledgeActivityDeps {
  objects: ObjectStore;
  vectors: VectorStore;
  embedders: EmbedderRegistry;
  knowledge: KnowledgeStore;
  /** Holds the ingestion manifests (the platform's own objects). */
  platformBucket: string;
  storageScopes: StorageScopeStore;
  unstructured?: (name: string, bytes: Uint8Array) => Promise<Block[]>;
  /** Receives the seconds spent per pipeline stage (metrics, benchmarks). */
  observeStage?: (stage: IngestStage, seconds: number) => void;
}

export type IngestStage = 'download' | 'parse' | 'embed' | 'upsert' | 'record';

const EMBED_BATCH = 32;
// Downloads kept in flight ahead of the document being parsed, so object-store latency overlaps the embedding.
const PREFETCH = 8;
// Points written per upsert: each upsert and stale-delete is one commit in the vector store.
const FLUSH_CHUNKS = 256;
// Liveness heartbeats at most this often: the SDK encodes and hands every call to its core (which only sends one
// per 80 % of the 10 s heartbeat timeout), so one per document was ~45 encodes a second for nothing.
const LIVENESS_EVERY_MS = 1000;

const manifestsOf = (tenantId: string) => `tenants/${tenantId}/ingestions/`;
const MANIFEST_FILE = '/manifest.json';
const manifestKey = (tenantId: string, ingestionId: string) =>
  `${manifestsOf(tenantId)}${encodeURIComponent(ingestionId)}${MANIFEST_FILE}`;
/** Whether `key` is the manifest key of one of the tenant's ingestions: one path segment between, not `.` or `..`. */
const isManifestKeyOf = (tenantId: string, key: string) => {
  const prefix = manifestsOf(tenantId);
  if (!key.startsWith(prefix) || !key.endsWith(MANIFEST_FILE)) return false;
  const segment = key.slice(prefix.length, -MANIFEST_FILE.length);
  return segment !== '' && segment !== '.' && segment !== '..' && !segment.includes('/');
};
// A worker runs batches of a few ingestions at a time; a run's batches come every few seconds while it lasts.
const MANIFESTS_KEPT = 4;
const MANIFEST_IDLE_MS = 120_000;

export const createKnowledgeActivities = (d: KnowledgeActivityDeps) => {
  const timed = async <T>(stage: IngestStage, fn: () => Promise<T>): Promise<T> => {
    if (!d.observeStage) return fn();
    const t0 = performance.now();
    try {
      return await fn();
    } finally {
      d.observeStage(stage, (performance.now() - t0) / 1000);
    }
  };
  const manifests = new ManifestCache<ManifestEntry[]>(MANIFESTS_KEPT, MANIFEST_IDLE_MS);
  const manifestOf = (uri: string): Promise<ManifestEntry[]> => {
    const read = async () => JSON.parse((await d.objects.get(parseObjectUri(uri))).toString('utf8'));
    const run = Context.current().info.workflowExecution?.runId;
    return run ? manifests.get(`${run}\0${uri}`, read) : read();
  };
  return {
    /** Creates the namespace (bound to its embedder) and its collection; returns the collection name. */
    async prepareNamespace(
      input: Pick<IngestionInput, 'tenantId' | 'namespace' | 'embedder'>,
    ): Promise<{ collection: string }> {
      const embedder = await d.embedders.get(input.embedder);
      const collection = collectionName(embedder.id, embedder.dimensions);
      const ns = await d.knowledge.ensureNamespace(input.tenantId, input.namespace, input.embedder, collection);
      if (ns.embedderId !== input.embedder) {
        throw ApplicationFailure.nonRetryable(
          `namespace '${input.namespace}' is indexed with embedder '${ns.embedderId}', not '${input.embedder}'`,
          IngestionFailures.embedderMismatch,
        );
      }
      await d.vectors.ensureCollection(ns.collection, embedder.dimensions);
      return { collection: ns.collection };
    },

    /**
     * Lists the source into a manifest stored in object storage (a large listing never enters the history)
     * and returns its URI and size.
     */
    async listSource(
      input: Pick<IngestionInput, 'tenantId' | 'namespace' | 'ingestionId' | 'source'>,
    ): Promise<{ manifestUri: string; total: number }> {
      const { bucket, prefix } =
        input.source.type === 'uploads'
          ? { bucket: d.storageScopes.bucketOf(input.tenantId), prefix: uploadsPrefix(input.tenantId, input.namespace) }
          : input.source;
      // A source names a bucket and a prefix: the bucket must be one the tenant may read, before anything is listed.
      await requireInScope(d.storageScopes, input.tenantId, [objectUri({ bucket, key: prefix || '_' })]);
      const objects = (await d.objects.list(bucket, prefix)).filter((o) => !o.key.endsWith('/'));
      const entries: ManifestEntry[] = objects.map((o) => ({
        documentId: o.key.slice(prefix.length),
        uri: objectUri({ bucket, key: o.key }),
        sizeBytes: o.sizeBytes,
      }));
      const ref = { bucket: d.platformBucket, key: manifestKey(input.tenantId, input.ingestionId) };
      await d.objects.put(ref, JSON.stringify(entries), 'application/json');
      return { manifestUri: objectUri(ref), total: entries.length };
    },

    /**
     * Indexes manifest entries [from, to): per document hash → skip if unchanged → parse → chunk; embeds
     * chunks of several documents together, then per flush: upsert (deterministic ids) → only then delete
     * those documents' stale points → record their new hashes → heartbeat. A retry (e.g. after the worker
     * was killed) resumes after the last flush; documents redone after it are found unchanged and skipped.
     */
    async ingestBatch(
      input: IngestionInput & { manifestUri: string; collection: string; from: number; to: number },
    ): Promise<BatchResult> {
      const ctx = Context.current();
      if (
        input.manifestUri !==
        objectUri({ bucket: d.platformBucket, key: manifestKey(input.tenantId, input.ingestionId) })
      )
        throw ApplicationFailure.nonRetryable(
          `${input.manifestUri} is not the manifest of ingestion ${input.ingestionId}`,
          StorageFailures.outOfScope,
        );
      const manifest = await manifestOf(input.manifestUri);
      // Written by listSource from a checked source; checked again so no entry reaches outside the tenant's scope.
      await requireInScope(
        d.storageScopes,
        input.tenantId,
        manifest.slice(input.from, input.to).map((e) => e.uri),
      );
      const resumed = ctx.info.heartbeatDetails as BatchProgress | undefined;
      const p: BatchProgress = resumed ?? {
        next: input.from,
        done: 0,
        skippedUnchanged: 0,
        failures: [],
        chunksWritten: 0,
      };
      const scope = { tenantId: input.tenantId, namespace: input.namespace };
      const embedder = await d.embedders.get(input.embedder);
      const parse = input.parser === 'unstructured' ? d.unstructured : parseBuiltin;
      if (!parse)
        throw ApplicationFailure.nonRetryable(
          'parser "unstructured" needs UNSTRUCTURED_API_URL on the worker',
          IngestionFailures.parserUnavailable,
        );
      const end = Math.min(input.to, manifest.length);
      const known = await d.knowledge.knownHashes(
        input.tenantId,
        input.namespace,
        manifest.slice(p.next, end).map((e) => e.documentId),
      );

      type Pending = { entry: ManifestEntry; contentHash: string; chunks: Chunk[] };
      let pending: Pending[] = [];
      // What a retry may resume from: the state as of the last flush, never counts of unflushed documents.
      let committed = structuredClone(p);
      let lastBeat = 0;
      const beat = (force: boolean) => {
        const now = performance.now();
        if (!force && now - lastBeat < LIVENESS_EVERY_MS) return;
        lastBeat = now;
        ctx.heartbeat(committed);
      };
      // Chunk texts of the pending documents, embedded a full batch at a time as parsing produces them, so the
      // model works while the next documents download (awaited, and so reported, at the flush).
      let texts: string[] = [];
      let embeddings: Promise<Float32Array[]>[] = [];
      const submit = (all: boolean) => {
        for (
          let at = embeddings.length * EMBED_BATCH;
          texts.length - at >= (all ? 1 : EMBED_BATCH);
          at += EMBED_BATCH
        ) {
          const batch = texts.slice(at, at + EMBED_BATCH);
          const pr = timed('embed', () => embedder.embed(batch));
          pr.catch(() => undefined);
          embeddings.push(pr);
        }
      };
      const flush = async (next: number) => {
        submit(true);
        const vectors: Float32Array[] = [];
        for (const pr of embeddings) {
          vectors.push(...(await pr));
          beat(false);
        }
        texts = [];
        embeddings = [];
        let v = 0;
        const points: VectorPoint[] = pending.flatMap((doc) =>
          doc.chunks.map((c, chunkIndex) => {
            const payload = {
              ...scope,
              documentId: doc.entry.documentId,
              chunkIndex,
              contentHash: doc.contentHash,
              text: c.text,
              source: { uri: doc.entry.uri, page: c.page, heading: c.heading, start: c.start, end: c.end },
            };
            return { id: pointId(payload), vector: vectors[v++]!, payload };
          }),
        );
        await timed('upsert', async () => {
          await d.vectors.upsert(input.collection, points);
          // Every document, also ones the store has no record of: an ingestion cancelled between its upsert and
          // its record leaves points that only this delete would clean up.
          await d.vectors.deleteStale(
            input.collection,
            scope,
            pending.map((doc) => ({ documentId: doc.entry.documentId, contentHash: doc.contentHash })),
          );
        });
        await timed('record', () =>
          d.knowledge.recordIndexed(
            input.tenantId,
            input.namespace,
            pending.map((doc) => ({
              documentId: doc.entry.documentId,
              sourceUri: doc.entry.uri,
              contentHash: doc.contentHash,
              chunkCount: doc.chunks.length,
              ingestionId: input.ingestionId,
            })),
          ),
        );
        p.done += pending.length;
        p.chunksWritten += points.length;
        ingestionDocumentsTotal.inc({ outcome: 'indexed' }, pending.length);
        ingestionChunksTotal.inc(points.length);
        p.next = next;
        pending = [];
        committed = structuredClone(p);
        beat(true);
      };

      const downloads = new Map<number, Promise<Buffer>>();
      const download = (i: number) => {
        if (i < end && !downloads.has(i)) {
          const pr = d.objects.get(parseObjectUri(manifest[i]!.uri));
          pr.catch(() => undefined); // awaited (and so reported) when its turn comes
          downloads.set(i, pr);
        }
      };
      for (let i = p.next; i < end; i++) {
        const entry = manifest[i]!;
        for (let k = i; k < i + PREFETCH; k++) download(k);
        // Timed as the wait for the download, the part that stalls the pipeline (prefetches overlap).
        const bytes = await timed('download', () => downloads.get(i)!);
        downloads.delete(i);
        const contentHash = createHash('sha256').update(bytes).digest('hex');
        if (known.get(entry.documentId) === contentHash) {
          p.skippedUnchanged++;
          ingestionDocumentsTotal.inc({ outcome: 'unchanged' });
        } else {
          try {
            const blocks = await timed('parse', () => parse(entry.documentId, bytes));
            const chunks = chunkBlocks(blocks, input.chunking);
            pending.push({ entry, contentHash, chunks });
            texts.push(
              ...chunks.map((c) => (c.heading && !c.text.startsWith(c.heading) ? `${c.heading}\n${c.text}` : c.text)),
            );
            submit(false);
          } catch (err) {
            if (!(err instanceof UnparseableDocumentError)) throw err;
            await d.knowledge.recordFailed(input.tenantId, input.namespace, {
              documentId: entry.documentId,
              sourceUri: entry.uri,
              error: err.message,
              ingestionId: input.ingestionId,
            });
            p.failures.push({ documentId: entry.documentId, reason: err.message });
            ingestionDocumentsTotal.inc({ outcome: 'failed' });
          }
        }
        if (texts.length >= FLUSH_CHUNKS || i === end - 1) await flush(i + 1);
        // Liveness between flushes too, so a slow batch is not taken for a dead worker.
        else beat(false);
      }
      return {
        done: p.done,
        skippedUnchanged: p.skippedUnchanged,
        failures: p.failures,
        chunksWritten: p.chunksWritten,
      };
    },

    /** Documents indexed before but gone from the source lose their points and their record. */
    async removeMissing(
      input: Pick<IngestionInput, 'tenantId' | 'namespace'> & { manifestUri: string; collection: string },
    ): Promise<number> {
      // What the manifest lacks is deleted, so it must be one the platform wrote for this tenant. The input names no
      // ingestion (runs recorded before would replay without one), so this checks the tenant, not the ingestion.
      const ref = parseObjectUri(input.manifestUri);
      if (ref.bucket !== d.platformBucket || !isManifestKeyOf(input.tenantId, ref.key))
        throw ApplicationFailure.nonRetryable(
          `${input.manifestUri} is not a manifest of tenant ${input.tenantId}'s ingestions`,
          StorageFailures.outOfScope,
        );
      const manifest = await manifestOf(input.manifestUri);
      const present = new Set(manifest.map((e) => e.documentId));
      const scope = { tenantId: input.tenantId, namespace: input.namespace };
      let removed = 0;
      for (const documentId of await d.knowledge.listDocumentIds(input.tenantId, input.namespace)) {
        if (present.has(documentId)) continue;
        await d.vectors.deleteDocument(input.collection, scope, documentId);
        await d.knowledge.deleteDocument(input.tenantId, input.namespace, documentId);
        removed++;
        Context.current().heartbeat(removed);
      }
      return removed;
    },
  };
};

export type KnowledgeActivities = ReturnType<typeof createKnowledgeActivities>;
