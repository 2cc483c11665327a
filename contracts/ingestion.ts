import { defineQuery } from '@temporalio/workflow';
import type { OperationContract } from './operations';

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

export type IngestionPhase = 'listing' | 'indexing' | 'removing_deleted' | 'completed';

export interface IngestionProgress extends IngestionStats {
  phase: IngestionPhase;
  /** The first failures with their reasons (all of them are recorded per document in the platform store). */
  failures: DocumentFailure[];
  batchesDone: number;
  batchesTotal: number;
}

export const IngestionFailures = {
  embedderMismatch: 'EmbedderMismatch',
  parserUnavailable: 'ParserUnavailable',
} as const;

/** Document ingestion (POST /v1/knowledge/{namespace}/ingestions). Its status query was named `progress` from the start. */
export const ingestionContract = {
  kind: 'ingestion',
  workflowType: 'ingestDocuments',
  resource: 'ingestion',
  statusQuery: defineQuery<IngestionProgress>('progress'),
  terminalPhases: ['completed'],
} as const satisfies OperationContract<IngestionProgress>;
