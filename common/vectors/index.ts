import { v5 as uuidv5 } from 'uuid';

/** Where a chunk came from, so an answer can cite it. Offsets are character offsets in the extracted text. */
export interface ChunkSource {
  uri: string;
  page: number | null;
  heading: string | null;
  start: number;
  end: number;
}

export interface ChunkPayload {
  tenantId: string;
  namespace: string;
  documentId: string;
  chunkIndex: number;
  contentHash: string;
  text: string;
  source: ChunkSource;
}

export interface VectorPoint {
  id: string;
  vector: Float32Array | number[];
  payload: ChunkPayload;
}

export interface SearchHit {
  id: string;
  score: number;
  payload: ChunkPayload;
}

/** Every read and delete is scoped by tenant and namespace; stores apply the scope server-side. */
export interface Scope {
  tenantId: string;
  namespace: string;
}

export interface VectorStore {
  /** Creates the collection for this vector size if it does not exist. */
  ensureCollection(collection: string, dimensions: number): Promise<void>;
  /** Insert-or-replace by id: re-sending the same points leaves the same set. */
  upsert(collection: string, points: VectorPoint[]): Promise<void>;
  /** Removes all points of one document. */
  deleteDocument(collection: string, scope: Scope, documentId: string): Promise<void>;
  /** For each document, removes its points of every other content hash than `contentHash` (its current version). */
  deleteStale(collection: string, scope: Scope, current: { documentId: string; contentHash: string }[]): Promise<void>;
  deleteNamespace(collection: string, scope: Scope): Promise<void>;
  search(
    collection: string,
    scope: Scope,
    vector: Float32Array | number[],
    topK: number,
    documentIds?: string[],
  ): Promise<SearchHit[]>;
  /** Ids of every point in the scope (for audits and tests; not for large production namespaces). */
  pointIds(collection: string, scope: Scope): Promise<string[]>;
}

// A fixed namespace for uuid v5, so the same chunk always gets the same id on every machine and run.
const POINT_ID_NAMESPACE = '3a1f0c52-5b8e-4d0f-9a61-6f1c2b7d9e40';

/** Deterministic point id: a retried or repeated ingestion overwrites instead of duplicating. */
export function pointId(
  p: Pick<ChunkPayload, 'tenantId' | 'namespace' | 'documentId' | 'chunkIndex' | 'contentHash'>,
): string {
  return uuidv5(
    JSON.stringify([p.tenantId, p.namespace, p.documentId, p.chunkIndex, p.contentHash]),
    POINT_ID_NAMESPACE,
  );
}

/** One collection per embedding model and vector size: vectors of different models never mix. */
export const collectionName = (embedderId: string, dimensions: number): string =>
  `chunks_${embedderId.toLowerCase().replace(/[^a-z0-9]+/g, '_')}_${dimensions}`;
