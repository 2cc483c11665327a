import { defineQuery } from '@temporalio/workflow';
import type { OperationContract } from './operations';

/**
 * The fine-tune request, the trainer contract and the run's status (plain data: the workflow imports these).
 * The API validates a request against the bounds below and fills in DEFAULT_HYPERPARAMETERS, so the workflow
 * input always carries every value the trainer uses: the lineage records exactly what produced a version.
 */

export const FINE_TUNE_METHODS = ['lora', 'qlora', 'full'] as const;
export type FineTuneMethod = (typeof FINE_TUNE_METHODS)[number];

export interface Hyperparameters {
  /** Optimiser steps in total (resumed runs count from the checkpoint's step). */
  totalSteps: number;
  batchSize: number;
  learningRate: number;
  /** LoRA/QLoRA: rank of the adapters; ignored by `full`. */
  loraRank: number;
  /** LoRA/QLoRA: adapters are scaled by alpha / rank. */
  loraAlpha: number;
  /** A checkpoint (and progress.json) every this many steps. */
  checkpointEverySteps: number;
  /** Share of the dataset held out for the eval loss the trainer reports. */
  evalFraction: number;
  /** Every random choice (initial adapters, each step's batch) derives from (seed, step): a resume is bit-identical. */
  seed: number;
}

export const DEFAULT_HYPERPARAMETERS: Hyperparameters = {
  totalSteps: 1000,
  batchSize: 16,
  learningRate: 2e-4,
  loraRank: 8,
  loraAlpha: 16,
  checkpointEverySteps: 100,
  evalFraction: 0.1,
  seed: 42,
};

export const HYPERPARAMETER_BOUNDS: Record<
  keyof Hyperparameters,
  { minimum?: number; exclusiveMinimum?: number; maximum: number; integer: boolean }
> = {
  totalSteps: { minimum: 1, maximum: 10_000_000, integer: true },
  batchSize: { minimum: 1, maximum: 65_536, integer: true },
  learningRate: { exclusiveMinimum: 0, maximum: 10, integer: false },
  loraRank: { minimum: 1, maximum: 1024, integer: true },
  loraAlpha: { exclusiveMinimum: 0, maximum: 4096, integer: false },
  checkpointEverySteps: { minimum: 1, maximum: 10_000_000, integer: true },
  evalFraction: { minimum: 0, maximum: 0.5, integer: false },
  seed: { minimum: 0, maximum: 2 ** 31 - 1, integer: true },
};

export interface FineTuneResources {
  /** GPUs (or MIG instances of `migProfile`) the Job's one pod asks for; what the tenant's quota counts. */
  gpuCount: number;
  /** `nvidia.com/gpu.product` node label, e.g. NVIDIA-A100-SXM4-80GB; none: any GPU node. */
  gpuProduct?: string;
  /** MIG profile such as `1g.10gb`: the pod asks for `nvidia.com/mig-<profile>` instead of whole GPUs. */
  migProfile?: string;
  cpu: string;
  memory: string;
}

export interface FineTuneInput {
  tenantId: string;
  fineTuneId: string;
  cluster: string;
  base: { modelId: string; version: string };
  output: { modelId: string; version: string };
  datasetUri: string;
  method: FineTuneMethod;
  hyperparameters: Hyperparameters;
  resources: FineTuneResources;
  /** Higher runs first among a tenant's queued runs. */
  priority: number;
  /** Resubmissions after a lost pod (eviction, node loss) before the run fails. */
  maxResumptions: number;
  /** Bounds each Job (activeDeadlineSeconds), pending time included. */
  jobDeadlineSeconds: number;
}

/**
 * The trainer contract: environment of the Job's container, and what the trainer writes under LLMHUB_RUN_PREFIX.
 * The reference trainer (deploy/trainers/reference) and the production one (deploy/trainers/hf) both follow it.
 */
export const TrainerEnv = {
  runPrefix: 'LLMHUB_RUN_PREFIX',
  baseModelUri: 'LLMHUB_BASE_MODEL_URI',
  datasetUri: 'LLMHUB_DATASET_URI',
  method: 'LLMHUB_METHOD',
  hyperparameters: 'LLMHUB_HYPERPARAMETERS',
  resumeFrom: 'LLMHUB_RESUME_FROM',
  attempt: 'LLMHUB_ATTEMPT',
} as const;

/** Object names under the run prefix. */
export const RunObjects = {
  progress: 'progress.json',
  output: 'output/model.safetensors',
  checkpoint: (step: number) => `checkpoints/step-${String(step).padStart(8, '0')}.safetensors`,
} as const;

/** progress.json, rewritten by the trainer at every checkpoint and at the end. */
export interface TrainerProgress {
  step: number;
  totalSteps: number;
  /** [step, training loss], one point per logged step. */
  loss: [number, number][];
  /** [step, eval loss on the held-out share]. */
  evalLoss: [number, number][];
  /** The latest checkpoint: a resume starts from it. */
  checkpoint: { step: number; uri: string } | null;
  /** One entry per trainer process (Job attempt): the steps it trained, [fromStep, toStep). */
  segments: { attempt: number; fromStep: number; toStep: number }[];
  /** Set once the merged weights are written. */
  output: { uri: string } | null;
}

export type FineTunePhase =
  | 'validating'
  | 'queued'
  | 'starting'
  | 'pending'
  | 'running'
  | 'resuming'
  | 'registering'
  | 'succeeded'
  | 'failed'
  | 'cancelled';
export const TERMINAL_FINE_TUNE_PHASES: readonly FineTunePhase[] = ['succeeded', 'failed', 'cancelled'];

export interface FineTuneStatus {
  phase: FineTunePhase;
  fineTuneId: string;
  base: { modelId: string; version: string };
  output: { modelId: string; version: string };
  method: FineTuneMethod;
  gpuCount: number;
  /** The current Job and its pod as the scheduler sees it; pendingReason e.g. "0/6 nodes are available: … Insufficient nvidia.com/gpu". */
  job: {
    name: string;
    attempt: number;
    podPhase: string | null;
    node: string | null;
    pendingReason: string | null;
  } | null;
  progress: {
    step: number;
    totalSteps: number;
    lossCurve: [number, number][];
    evalLoss: [number, number][];
    checkpointStep: number | null;
  } | null;
  /** Every resubmission after a lost pod, with the checkpoint it resumed from. */
  resumptions: { attempt: number; fromStep: number; reason: string }[];
  result: { modelId: string; version: string; artifactUri: string; checksum: string } | null;
  failureReason: string | null;
  /** Workflow time (epoch ms) of each milestone, so runs can be ordered against each other. */
  timeline: { queuedAt: number | null; claimedAt: number | null; finishedAt: number | null };
}

/** A GPU quota for tenants without a row (PUT /v1/quotas/gpu sets one). */
export const DEFAULT_GPU_QUOTA = 8;

export const FineTuneFailures = {
  baseVersionNotReady: 'BaseVersionNotReady',
  datasetNotFound: 'DatasetNotFound',
  outputVersionExists: 'OutputVersionExists',
  outputMissing: 'OutputMissing',
  /** The run's GPU claim was released under it (cancelled elsewhere): it must not start a Job. */
  claimReleased: 'ClaimReleased',
  trainingFailed: 'TrainingFailed',
  tooManyResumptions: 'TooManyResumptions',
  /** The run ended without a version; the failure's details carry the final status. */
  failed: 'FineTuneFailed',
} as const;

/** Fine-tuning on the tenant's GPUs (POST /v1/fine-tunes). */
export const fineTuneContract = {
  kind: 'fine-tune',
  workflowType: 'fineTune',
  resource: 'fine-tune',
  idField: 'fineTuneId',
  statusQuery: defineQuery<FineTuneStatus>('status'),
  terminalPhases: TERMINAL_FINE_TUNE_PHASES,
} as const satisfies OperationContract<FineTuneStatus>;
