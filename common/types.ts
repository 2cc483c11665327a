/** Domain types shared by the API, activities and workflows (plain data only: workflows import these). */

export const Roles = ['viewer', 'developer', 'operator', 'approver', 'admin'] as const;
export type Role = (typeof Roles)[number];
/** Who may answer an approval (a rollout gate, a pipeline gate, an agent's risky tool call). */
export const APPROVER_ROLES: readonly string[] = ['approver', 'admin'];

/** Who is calling: resolved from an API key or a JWT, always scoped to one tenant. */
export interface Principal {
  tenantId: string;
  subject: string;
  roles: Role[];
  via: 'api_key' | 'jwt';
}

export interface Model {
  id: string;
  name: string;
  description: string;
  createdAt: string;
}

export type ModelVersionState = 'registering' | 'ready' | 'failed';

export interface ModelVersion {
  modelId: string;
  version: string;
  artifactUri: string;
  state: ModelVersionState;
  sizeBytes: number | null;
  checksum: string | null;
  etag: string | null;
  failureReason: string | null;
  workflowId: string;
  createdAt: string;
  updatedAt: string;
}

/** Input of the model-version registration workflow: references only, never secrets or file contents. */
export interface RegisterModelVersionInput {
  tenantId: string;
  modelId: string;
  version: string;
  artifactUri: string;
}

export interface ArtifactInfo {
  sizeBytes: number;
  checksum: string;
  etag: string | null;
}

export type IngestionSource =
  | { type: 's3'; bucket: string; prefix: string }
  /** Files uploaded through POST /v1/knowledge/{namespace}/files. */
  | { type: 'uploads' };

export interface ChunkingSpec {
  strategy: 'heading' | 'paragraph' | 'fixed';
  size: number;
  overlap: number;
}

/** Input of the ingestion workflow: references and options only; documents travel by object-store URI. */
export interface IngestionInput {
  tenantId: string;
  namespace: string;
  ingestionId: string;
  source: IngestionSource;
  parser: 'builtin' | 'unstructured';
  chunking: ChunkingSpec;
  embedder: string;
  /** Documents per activity; each activity heartbeats after every document and resumes from there. */
  batchSize: number;
  /** Batch activities in flight at once. */
  parallelism: number;
  /** Continue as new after this many batches even if the history is still small (unset: by history size only). */
  batchesPerRun?: number;
}

export interface DocumentFailure {
  documentId: string;
  reason: string;
}

export interface IngestionStats {
  total: number;
  done: number;
  skippedUnchanged: number;
  failed: number;
  chunksWritten: number;
  removed: number;
}
