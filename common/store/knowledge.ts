import type { Pool } from 'pg';
import { KeyPart, keysetPage, type Keyset, type Page, type PageQuery } from './pages';

export interface KnowledgeNamespace {
  name: string;
  embedderId: string;
  collection: string;
  createdAt: string;
}

export interface DocumentRecord {
  documentId: string;
  sourceUri: string;
  contentHash: string | null;
  chunkCount: number;
  state: 'indexed' | 'failed';
  error: string | null;
}

export const NAMESPACE_KEYS: Keyset<KnowledgeNamespace> = {
  list: 'namespaces',
  parts: [KeyPart.text],
  keyOf: (n) => [n.name],
};
export const DOCUMENT_KEYS: Keyset<DocumentRecord> = {
  list: 'documents',
  parts: [KeyPart.text],
  keyOf: (d) => [d.documentId],
};

/** Namespaces and per-document index state; every query is scoped by tenant. */
export class KnowledgeStore {
  constructor(private readonly db: Pool) {}

  /** Creates the namespace on first use; a namespace keeps the embedder it was created with. */
  async ensureNamespace(
    tenantId: string,
    name: string,
    embedderId: string,
    collection: string,
  ): Promise<KnowledgeNamespace> {
    await this.db.query(
      `INSERT INTO knowledge_namespaces (tenant_id, name, embedder_id, collection) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`,
      [tenantId, name, embedderId, collection],
    );
    const ns = await this.getNamespace(tenantId, name);
    if (!ns) throw new Error(`namespace ${name} vanished`);
    return ns;
  }

  async getNamespace(tenantId: string, name: string): Promise<KnowledgeNamespace | undefined> {
    const { rows } = await this.db.query(
      'SELECT name, embedder_id, collection, created_at FROM knowledge_namespaces WHERE tenant_id = $1 AND name = $2',
      [tenantId, name],
    );
    const r = rows[0];
    return r
      ? { name: r.name, embedderId: r.embedder_id, collection: r.collection, createdAt: r.created_at.toISOString() }
      : undefined;
  }

  async listNamespaces(tenantId: string, q: PageQuery): Promise<Page<KnowledgeNamespace & { documents: number }>> {
    return keysetPage(NAMESPACE_KEYS, q, async (after, take) => {
      const { rows } = await this.db.query(
        `SELECT n.name, n.embedder_id, n.collection, n.created_at, count(d.document_id)::int AS documents
         FROM knowledge_namespaces n LEFT JOIN knowledge_documents d ON d.tenant_id = n.tenant_id AND d.namespace = n.name
         WHERE n.tenant_id = $1 AND ($2::text IS NULL OR n.name > $2) GROUP BY n.tenant_id, n.name ORDER BY n.name LIMIT $3`,
        [tenantId, after?.[0] ?? null, take],
      );
      return rows.map((r) => ({
        name: r.name,
        embedderId: r.embedder_id,
        collection: r.collection,
        createdAt: r.created_at.toISOString(),
        documents: r.documents,
      }));
    });
  }

  async deleteNamespace(tenantId: string, name: string): Promise<boolean> {
    return (
      (await this.db.query('DELETE FROM knowledge_namespaces WHERE tenant_id = $1 AND name = $2', [tenantId, name]))
        .rowCount === 1
    );
  }

  /** A page of a namespace's documents with their index state, in one query however large the page. */
  async listDocuments(tenantId: string, namespace: string, q: PageQuery): Promise<Page<DocumentRecord>> {
    return keysetPage(DOCUMENT_KEYS, q, async (after, take) => {
      const { rows } = await this.db.query(
        `SELECT document_id, source_uri, content_hash, chunk_count, state, error FROM knowledge_documents
         WHERE tenant_id = $1 AND namespace = $2 AND ($3::text IS NULL OR document_id > $3) ORDER BY document_id LIMIT $4`,
        [tenantId, namespace, after?.[0] ?? null, take],
      );
      return rows.map((r) => ({
        documentId: r.document_id,
        sourceUri: r.source_uri,
        contentHash: r.content_hash,
        chunkCount: r.chunk_count,
        state: r.state,
        error: r.error,
      }));
    });
  }

  /**
   * Hashes of the indexed versions of these documents (null for one that failed), for the unchanged-document
   * check of a whole batch at once.
   */
  async knownHashes(tenantId: string, namespace: string, documentIds: string[]): Promise<Map<string, string | null>> {
    const { rows } = await this.db.query(
      `SELECT document_id, CASE WHEN state = 'indexed' THEN content_hash END AS content_hash FROM knowledge_documents
       WHERE tenant_id = $1 AND namespace = $2 AND document_id = ANY($3)`,
      [tenantId, namespace, documentIds],
    );
    return new Map(rows.map((r) => [r.document_id, r.content_hash]));
  }

  async listDocumentIds(tenantId: string, namespace: string): Promise<string[]> {
    const { rows } = await this.db.query(
      'SELECT document_id FROM knowledge_documents WHERE tenant_id = $1 AND namespace = $2 ORDER BY document_id',
      [tenantId, namespace],
    );
    return rows.map((r) => r.document_id);
  }

  /** Records a flush's documents as indexed in one statement (one round trip however many documents). */
  async recordIndexed(
    tenantId: string,
    namespace: string,
    docs: { documentId: string; sourceUri: string; contentHash: string; chunkCount: number; ingestionId: string }[],
  ): Promise<void> {
    if (docs.length === 0) return;
    await this.db.query(
      `INSERT INTO knowledge_documents (tenant_id, namespace, document_id, source_uri, content_hash, chunk_count, state, error, ingestion_id)
       SELECT $1, $2, d.document_id, d.source_uri, d.content_hash, d.chunk_count, 'indexed', NULL, d.ingestion_id
       FROM unnest($3::text[], $4::text[], $5::text[], $6::int[], $7::text[]) AS d(document_id, source_uri, content_hash, chunk_count, ingestion_id)
       ON CONFLICT (tenant_id, namespace, document_id) DO UPDATE SET source_uri = EXCLUDED.source_uri, content_hash = EXCLUDED.content_hash,
         chunk_count = EXCLUDED.chunk_count, state = 'indexed', error = NULL, ingestion_id = EXCLUDED.ingestion_id, updated_at = now()`,
      [
        tenantId,
        namespace,
        docs.map((d) => d.documentId),
        docs.map((d) => d.sourceUri),
        docs.map((d) => d.contentHash),
        docs.map((d) => d.chunkCount),
        docs.map((d) => d.ingestionId),
      ],
    );
  }

  /** A failed document keeps the points of its last good version (if any) and says why it failed. */
  async recordFailed(
    tenantId: string,
    namespace: string,
    d: { documentId: string; sourceUri: string; error: string; ingestionId: string },
  ): Promise<void> {
    await this.db.query(
      `INSERT INTO knowledge_documents (tenant_id, namespace, document_id, source_uri, state, error, ingestion_id)
       VALUES ($1, $2, $3, $4, 'failed', $5, $6)
       ON CONFLICT (tenant_id, namespace, document_id) DO UPDATE SET state = 'failed', error = $5, ingestion_id = $6, updated_at = now()`,
      [tenantId, namespace, d.documentId, d.sourceUri, d.error, d.ingestionId],
    );
  }

  async deleteDocument(tenantId: string, namespace: string, documentId: string): Promise<void> {
    await this.db.query(
      'DELETE FROM knowledge_documents WHERE tenant_id = $1 AND namespace = $2 AND document_id = $3',
      [tenantId, namespace, documentId],
    );
  }
}
