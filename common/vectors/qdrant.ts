import { QdrantClient } from '@qdrant/js-client-rest';
import type { ChunkPayload, Scope, SearchHit, VectorPoint, VectorStore } from './index';

const scopeMust = (s: Scope) => [
  { key: 'tenantId', match: { value: s.tenantId } },
  { key: 'namespace', match: { value: s.namespace } },
];

/**
 * Qdrant for production: one collection per embedding model/size, payload indexes on tenant and namespace,
 * the tenant filter sent with every query so isolation is enforced by the server, batched upserts with `wait`.
 */
export class QdrantVectorStore implements VectorStore {
  readonly client: QdrantClient;

  constructor(url: string, apiKey?: string) {
    this.client = new QdrantClient({ url, ...(apiKey ? { apiKey } : {}), checkCompatibility: false });
  }

  async ensureCollection(collection: string, dimensions: number): Promise<void> {
    const { exists } = await this.client.collectionExists(collection);
    if (!exists) {
      try {
        await this.client.createCollection(collection, { vectors: { size: dimensions, distance: 'Cosine' } });
      } catch (err) {
        if (!(await this.client.collectionExists(collection)).exists) throw err;
      }
    }
    for (const field of ['tenantId', 'namespace', 'documentId', 'contentHash']) {
      await this.client.createPayloadIndex(collection, { field_name: field, field_schema: 'keyword', wait: true });
    }
  }

  async upsert(collection: string, points: VectorPoint[]): Promise<void> {
    for (let i = 0; i < points.length; i += 256) {
      await this.client.upsert(collection, {
        wait: true,
        points: points.slice(i, i + 256).map((p) => ({
          id: p.id,
          vector: Array.from(p.vector),
          payload: p.payload as unknown as Record<string, unknown>,
        })),
      });
    }
  }

  async deleteDocument(collection: string, scope: Scope, documentId: string): Promise<void> {
    await this.client.delete(collection, {
      wait: true,
      filter: { must: [...scopeMust(scope), { key: 'documentId', match: { value: documentId } }] },
    });
  }

  async deleteStale(
    collection: string,
    scope: Scope,
    current: { documentId: string; contentHash: string }[],
  ): Promise<void> {
    if (current.length === 0) return;
    await this.client.delete(collection, {
      wait: true,
      filter: {
        must: scopeMust(scope),
        should: current.map((c) => ({
          must: [{ key: 'documentId', match: { value: c.documentId } }],
          must_not: [{ key: 'contentHash', match: { value: c.contentHash } }],
        })),
      },
    });
  }

  async deleteNamespace(collection: string, scope: Scope): Promise<void> {
    if (!(await this.client.collectionExists(collection)).exists) return;
    await this.client.delete(collection, { wait: true, filter: { must: scopeMust(scope) } });
  }

  async search(
    collection: string,
    scope: Scope,
    vector: Float32Array | number[],
    topK: number,
    documentIds?: string[],
  ): Promise<SearchHit[]> {
    if (!(await this.client.collectionExists(collection)).exists) return [];
    const must: object[] = scopeMust(scope);
    if (documentIds?.length) must.push({ key: 'documentId', match: { any: documentIds } });
    const { points } = await this.client.query(collection, {
      query: Array.from(vector),
      limit: topK,
      filter: { must },
      with_payload: true,
    });
    return points.map((h) => ({ id: String(h.id), score: h.score, payload: h.payload as unknown as ChunkPayload }));
  }

  async pointIds(collection: string, scope: Scope): Promise<string[]> {
    if (!(await this.client.collectionExists(collection)).exists) return [];
    const ids: string[] = [];
    let offset: string | number | undefined | null;
    do {
      const page = await this.client.scroll(collection, {
        filter: { must: scopeMust(scope) },
        limit: 1000,
        with_payload: false,
        ...(offset ? { offset } : {}),
      });
      ids.push(...page.points.map((p) => String(p.id)));
      offset = page.next_page_offset as string | number | null | undefined;
    } while (offset);
    return ids.sort();
  }
}
