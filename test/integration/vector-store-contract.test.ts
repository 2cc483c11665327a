import path from 'node:path';
import { describe, expect, it } from '@jest/globals';
import { pointId, type ChunkPayload, type VectorPoint, type VectorStore } from '../../common/vectors';
import { LanceDbVectorStore } from '../../common/vectors/lancedb';
import { QdrantVectorStore } from '../../common/vectors/qdrant';
import { uniqueId } from '../support/platform';

/**
 * One contract for every VectorStore: always against the embedded LanceDB store, and against a real
 * Qdrant server when QDRANT_URL is set (no Qdrant server can be installed from the registries here).
 */
const stores: [string, () => Promise<VectorStore>][] = [
  ['lancedb', () => LanceDbVectorStore.open(path.join(process.env.LLMHUB_TEST_DATA!, uniqueId('lance')))],
  ...(process.env.QDRANT_URL
    ? [
        ['qdrant', async () => new QdrantVectorStore(process.env.QDRANT_URL!, process.env.QDRANT_API_KEY)] as [
          string,
          () => Promise<VectorStore>,
        ],
      ]
    : []),
];

const DIM = 4;
const unit = (...v: number[]) => {
  const n = Math.hypot(...v);
  return v.map((x) => x / n);
};
function point(
  tenantId: string,
  namespace: string,
  documentId: string,
  chunkIndex: number,
  contentHash: string,
  vector: number[],
): VectorPoint {
  const payload: ChunkPayload = {
    tenantId,
    namespace,
    documentId,
    chunkIndex,
    contentHash,
    text: `${documentId}#${chunkIndex}@${contentHash}`,
    source: { uri: `s3://b/${documentId}`, page: null, heading: null, start: 0, end: 1 },
  };
  return { id: pointId(payload), vector, payload };
}

describe.each(stores)('VectorStore contract: %s', (_name, open) => {
  const setup = async () => {
    const store = await open();
    const collection = uniqueId('contract').replace(/-/g, '_');
    await store.ensureCollection(collection, DIM);
    await store.ensureCollection(collection, DIM); // idempotent
    return {
      store,
      collection,
      a: { tenantId: uniqueId('a'), namespace: 'ns' },
      b: { tenantId: uniqueId('b'), namespace: 'ns' },
    };
  };

  it('upserts by id: sending the same points twice leaves one copy of each', async () => {
    const { store, collection, a } = await setup();
    const pts = [
      point(a.tenantId, a.namespace, 'd1', 0, 'h1', unit(1, 0, 0, 0)),
      point(a.tenantId, a.namespace, 'd1', 1, 'h1', unit(0, 1, 0, 0)),
    ];
    await store.upsert(collection, pts);
    await store.upsert(collection, pts);
    expect(await store.pointIds(collection, a)).toEqual(pts.map((p) => p.id).sort());
  });

  it("searches only the caller's tenant and namespace, even when another tenant's points are closer", async () => {
    const { store, collection, a, b } = await setup();
    await store.upsert(collection, [
      point(a.tenantId, a.namespace, 'mine', 0, 'h', unit(1, 1, 0, 0)),
      point(b.tenantId, b.namespace, 'theirs', 0, 'h', unit(1, 0, 0, 0)),
      point(a.tenantId, 'other-ns', 'elsewhere', 0, 'h', unit(1, 0, 0, 0)),
    ]);
    const hits = await store.search(collection, a, unit(1, 0, 0, 0), 10);
    expect(hits.map((h) => h.payload.documentId)).toEqual(['mine']);
    expect(hits[0]!.score).toBeCloseTo(Math.SQRT1_2, 3);
  });

  it('ranks by cosine similarity and filters by document ids', async () => {
    const { store, collection, a } = await setup();
    await store.upsert(collection, [
      point(a.tenantId, a.namespace, 'near', 0, 'h', unit(1, 0.1, 0, 0)),
      point(a.tenantId, a.namespace, 'far', 0, 'h', unit(0, 0, 1, 0)),
      point(a.tenantId, a.namespace, 'mid', 0, 'h', unit(1, 1, 1, 0)),
    ]);
    expect((await store.search(collection, a, unit(1, 0, 0, 0), 3)).map((h) => h.payload.documentId)).toEqual([
      'near',
      'mid',
      'far',
    ]);
    expect((await store.search(collection, a, unit(1, 0, 0, 0), 3, ['far'])).map((h) => h.payload.documentId)).toEqual([
      'far',
    ]);
  });

  it('deletes stale versions of a document and keeps the current one, leaving other documents alone', async () => {
    const { store, collection, a, b } = await setup();
    const old = [
      point(a.tenantId, a.namespace, 'doc', 0, 'v1', unit(1, 0, 0, 0)),
      point(a.tenantId, a.namespace, 'doc', 1, 'v1', unit(0, 1, 0, 0)),
    ];
    const current = point(a.tenantId, a.namespace, 'doc', 0, 'v2', unit(0, 0, 1, 0));
    const other = point(a.tenantId, a.namespace, 'other', 0, 'v1', unit(0, 0, 0, 1));
    const foreign = point(b.tenantId, b.namespace, 'doc', 0, 'v1', unit(1, 0, 0, 0));
    await store.upsert(collection, [...old, current, other, foreign]);
    await store.deleteStale(collection, a, [{ documentId: 'doc', contentHash: 'v2' }]);
    expect(await store.pointIds(collection, a)).toEqual([current.id, other.id].sort());
    expect(await store.pointIds(collection, b)).toEqual([foreign.id]);
    await store.deleteDocument(collection, a, 'doc');
    expect(await store.pointIds(collection, a)).toEqual([other.id]);
    await store.deleteNamespace(collection, a);
    expect(await store.pointIds(collection, a)).toEqual([]);
    expect(await store.pointIds(collection, b)).toEqual([foreign.id]);
  });

  it('treats quotes in ids and names as data, not as filter syntax', async () => {
    const { store, collection, a } = await setup();
    const tricky = { tenantId: a.tenantId, namespace: "x' OR '1'='1" };
    await store.upsert(collection, [point(a.tenantId, a.namespace, 'safe', 0, 'h', unit(1, 0, 0, 0))]);
    expect(await store.search(collection, tricky, unit(1, 0, 0, 0), 5)).toEqual([]);
    await store.deleteDocument(collection, a, "safe' OR '1'='1");
    expect(await store.pointIds(collection, a)).toHaveLength(1);
  });
});
