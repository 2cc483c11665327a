import * as lancedb from '@lancedb/lancedb';
import { Field, FixedSizeList, Float32, Int32, Schema, Utf8 } from 'apache-arrow';
import type { ChunkPayload, Scope, SearchHit, VectorPoint, VectorStore } from './index';

/** SQL string literal for LanceDB filters (DataFusion dialect): quotes doubled, nothing else interpreted. */
const lit = (s: string): string => `'${s.replaceAll("'", "''")}'`;
const scopeFilter = (s: Scope): string => `tenant_id = ${lit(s.tenantId)} AND namespace = ${lit(s.namespace)}`;

interface Row {
  id: string;
  vector: number[] | Float32Array;
  tenant_id: string;
  namespace: string;
  document_id: string;
  chunk_index: number;
  content_hash: string;
  text: string;
  source_uri: string;
  page: number | null;
  heading: string | null;
  start_offset: number;
  end_offset: number;
  _distance?: number;
}

const toRow = (p: VectorPoint): Row => ({
  id: p.id,
  vector: Array.from(p.vector),
  tenant_id: p.payload.tenantId,
  namespace: p.payload.namespace,
  document_id: p.payload.documentId,
  chunk_index: p.payload.chunkIndex,
  content_hash: p.payload.contentHash,
  text: p.payload.text,
  source_uri: p.payload.source.uri,
  page: p.payload.source.page,
  heading: p.payload.source.heading,
  start_offset: p.payload.source.start,
  end_offset: p.payload.source.end,
});

const toPayload = (r: Row): ChunkPayload => ({
  tenantId: r.tenant_id,
  namespace: r.namespace,
  documentId: r.document_id,
  chunkIndex: r.chunk_index,
  contentHash: r.content_hash,
  text: r.text,
  source: { uri: r.source_uri, page: r.page, heading: r.heading, start: r.start_offset, end: r.end_offset },
});

/**
 * The embedded default vector store: LanceDB tables in a local folder, no server to run. Writes to one
 * table are serialised in-process (LanceDB commits are optimistic; concurrent writers would only retry).
 */
export class LanceDbVectorStore implements VectorStore {
  private tables = new Map<string, Promise<lancedb.Table>>();
  private writeChain = Promise.resolve();

  private constructor(private readonly db: lancedb.Connection) {}

  /** `readConsistencyInterval: 0` so a reader sees another process's writes at once (tests, API vs worker). */
  static async open(dir: string): Promise<LanceDbVectorStore> {
    return new LanceDbVectorStore(await lancedb.connect(dir, { readConsistencyInterval: 0 }));
  }

  private table(collection: string): Promise<lancedb.Table> {
    let t = this.tables.get(collection);
    if (!t) {
      t = this.db.openTable(collection);
      this.tables.set(collection, t);
      t.catch(() => this.tables.delete(collection));
    }
    return t;
  }

  private serialised<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.writeChain.then(fn);
    this.writeChain = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  async ensureCollection(collection: string, dimensions: number): Promise<void> {
    if ((await this.db.tableNames()).includes(collection)) return;
    const schema = new Schema([
      new Field('id', new Utf8(), false),
      new Field('vector', new FixedSizeList(dimensions, new Field('item', new Float32(), true)), false),
      new Field('tenant_id', new Utf8(), false),
      new Field('namespace', new Utf8(), false),
      new Field('document_id', new Utf8(), false),
      new Field('chunk_index', new Int32(), false),
      new Field('content_hash', new Utf8(), false),
      new Field('text', new Utf8(), false),
      new Field('source_uri', new Utf8(), false),
      new Field('page', new Int32(), true),
      new Field('heading', new Utf8(), true),
      new Field('start_offset', new Int32(), false),
      new Field('end_offset', new Int32(), false),
    ]);
    await this.serialised(async () => {
      try {
        await this.db.createEmptyTable(collection, schema, { mode: 'create', existOk: true });
      } catch (err) {
        if (!(await this.db.tableNames()).includes(collection)) throw err;
      }
    });
  }

  async upsert(collection: string, points: VectorPoint[]): Promise<void> {
    if (points.length === 0) return;
    const table = await this.table(collection);
    await this.serialised(() =>
      table
        .mergeInsert('id')
        .whenMatchedUpdateAll()
        .whenNotMatchedInsertAll()
        .execute(points.map(toRow) as unknown as Record<string, unknown>[])
        .then(() => undefined),
    );
  }

  async deleteDocument(collection: string, scope: Scope, documentId: string): Promise<void> {
    const table = await this.table(collection);
    await this.serialised(() =>
      table.delete(`${scopeFilter(scope)} AND document_id = ${lit(documentId)}`).then(() => undefined),
    );
  }

  async deleteStale(
    collection: string,
    scope: Scope,
    current: { documentId: string; contentHash: string }[],
  ): Promise<void> {
    if (current.length === 0) return;
    const table = await this.table(collection);
    const stale = current
      .map((c) => `(document_id = ${lit(c.documentId)} AND content_hash != ${lit(c.contentHash)})`)
      .join(' OR ');
    // One commit for the whole batch instead of one per document.
    await this.serialised(() => table.delete(`${scopeFilter(scope)} AND (${stale})`).then(() => undefined));
  }

  async deleteNamespace(collection: string, scope: Scope): Promise<void> {
    if (!(await this.db.tableNames()).includes(collection)) return;
    const table = await this.table(collection);
    await this.serialised(() => table.delete(scopeFilter(scope)).then(() => undefined));
  }

  async search(
    collection: string,
    scope: Scope,
    vector: Float32Array | number[],
    topK: number,
    documentIds?: string[],
  ): Promise<SearchHit[]> {
    if (!(await this.db.tableNames()).includes(collection)) return [];
    const table = await this.table(collection);
    const docs = documentIds?.length ? ` AND document_id IN (${documentIds.map(lit).join(', ')})` : '';
    const rows = (await table
      .vectorSearch(Array.from(vector))
      .distanceType('cosine')
      .where(`${scopeFilter(scope)}${docs}`)
      // Without an index the search is exact; prefiltering keeps top-k within the tenant's own points.
      .limit(topK)
      .toArray()) as Row[];
    return rows.map((r) => ({ id: r.id, score: 1 - (r._distance ?? 1), payload: toPayload(r) }));
  }

  async pointIds(collection: string, scope: Scope): Promise<string[]> {
    if (!(await this.db.tableNames()).includes(collection)) return [];
    const table = await this.table(collection);
    const rows = (await table.query().where(scopeFilter(scope)).select(['id']).toArray()) as { id: string }[];
    return rows.map((r) => r.id).sort();
  }
}
