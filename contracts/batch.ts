import { defineQuery, defineSignal } from '@temporalio/workflow';
import type { OperationContract } from './operations';

/** The endpoints a batch line may call: what OpenAI's Batch API offers that the gateway serves. */
export const BATCH_ENDPOINTS = ['/v1/chat/completions', '/v1/embeddings', '/v1/completions'] as const;
export type BatchEndpoint = (typeof BATCH_ENDPOINTS)[number];

/**
 * Lines per page: what one activity reads from S3 and sends; the file's byte offset of each page is kept at upload.
 * 1,000 (200 before): each page costs an activity's round trips, a workflow task and two S3 objects, which at 200 lines
 * were a good part of a line's cost.
 */
export const BATCH_PAGE_LINES = 1000;

/** Where the Files API keeps files in a tenant's bucket. */
export const FILES_PREFIX = 'batches/files/';
/** Where a file of the Files API lives in its tenant's bucket. */
export const fileKey = (fileId: string): string => `${FILES_PREFIX}${fileId}.jsonl`;

export const BATCH_STATUSES = [
  'validating',
  'failed',
  'in_progress',
  'finalizing',
  'completed',
  'expired',
  'cancelling',
  'cancelled',
] as const;
export type BatchStatus = (typeof BATCH_STATUSES)[number];

export interface RequestCounts {
  total: number;
  completed: number;
  failed: number;
}

/** Where a batch's objects live: all under its tenant's bucket, so they go with the tenant. */
export interface BatchRef {
  tenantId: string;
  batchId: string;
  bucket: string;
}

export interface BatchInput extends BatchRef {
  endpoint: BatchEndpoint;
  inputFileId: string;
  /** The creator's principal: its subject (`key:<id>` for an API key) and roles, never a credential. */
  subject: string;
  roles: string[];
  /** Epoch ms past which the batch expires with what it has. */
  expiresAt: number;
  /**
   * The input's pages and lines, from its file's row at POST (absent in batches started before): a run that has them
   * starts its first pages beside the start's checks instead of after them.
   */
  pages?: number;
  total?: number;
  /** Pages run at once; each page's lines share the batch's concurrency. */
  pagesInFlight?: number;
  /** Pages one run may start before continuing as new; default: until Temporal suggests it. */
  pagesPerRun?: number;
  /** Carried over by continue-as-new. */
  resume?: BatchProgress;
}

export interface BatchProgress {
  /** Pages whose every line has its result. */
  pagesDone: number[];
  counts: RequestCounts;
  pages: number;
}

export interface BatchRunStatus {
  status: BatchStatus;
  requestCounts: RequestCounts;
  pagesDone: number;
  pages: number;
}

export interface PageOutcome {
  page: number;
  completed: number;
  failed: number;
}

export type BatchEnding = 'completed' | 'cancelled' | 'expired';

/** An error of the batch itself (not of one line's call), as OpenAI's batch object lists them in `errors.data`. */
export interface BatchError {
  code: string;
  message: string;
  param: string | null;
  line: number | null;
}

/** The failure type of an activity that found the batch's input unusable; its first detail is the BatchError. */
export const BATCH_INPUT_FAILURE = 'BatchInputError';

export const batchContract = {
  kind: 'batch',
  workflowType: 'batch',
  resource: 'batch',
  statusQuery: defineQuery<BatchRunStatus>('status'),
  terminalPhases: ['completed', 'failed', 'expired', 'cancelled'],
} as const satisfies OperationContract<BatchRunStatus>;

/** Cancel: in-flight lines stop, and the batch ends `cancelled` with what it has. */
export const cancelBatchSignal = defineSignal('cancel');

/** Temporal's built-in query that the Temporal UI reads a run's current details from (workflows set them). */
export const workflowMetadataQuery = defineQuery<{ currentDetails?: string }>('__temporal_workflow_metadata');
