import { defineQuery } from '@temporalio/workflow';
import type { OperationContract } from './operations';

/**
 * Model conversion (POST /v1/conversions): the request's options, the workflow's input and the per-target results.
 * Plain data, so the workflow imports it; the programs that do the work are in deploy/convert/.
 */

export const ConversionTargets = ['onnx', 'onnx-int8', 'tensorrt'] as const;
export type ConversionTarget = (typeof ConversionTargets)[number];
/** The targets ONNX Runtime produces and checks on a CPU node. */
export type OnnxTarget = Exclude<ConversionTarget, 'tensorrt'>;

/** Maximum relative error (max |y - y_ref| / max |y_ref|) each target may show against the reference forward pass. */
export const DEFAULT_TOLERANCE: Record<ConversionTarget, number> = { onnx: 1e-4, 'onnx-int8': 5e-2, tensorrt: 1e-2 };

export interface ConversionOptions {
  /** Sorted and unique, so the same request in another order has the same memo key. */
  targets: ConversionTarget[];
  /** TensorRT engine precision; the ONNX targets are fp32 and int8 by definition. */
  precision: 'fp32' | 'fp16';
  validation: {
    /** Inline input rows; without them, `sampleCount` standard-normal rows from `seed`. */
    samples?: number[][];
    sampleCount: number;
    seed: number;
    tolerance: Partial<Record<ConversionTarget, number>>;
  };
  profile: { runs: number; batch: number };
}

export interface ConversionInput {
  tenantId: string;
  /** The Idempotency-Key the API knows the conversion by. */
  conversionId: string;
  /** `conversion/<tenant>/<conversionId>`: names the run's Jobs and its row. */
  workflowId: string;
  modelId: string;
  version: string;
  /** The version's llmhub-mlp safetensors file. */
  artifactUri: string;
  artifactChecksum: string;
  memoKey: string;
  toolchainVersion: string;
  /** The cluster (LLMHUB_CLUSTERS) whose nodes run the conversion Jobs. */
  cluster: string;
  options: ConversionOptions;
}

export type ConversionStep =
  { kind: 'export' } | { kind: 'optimize' | 'validate' | 'profile'; target: OnnxTarget } | { kind: 'tensorrt' };

/** What a step's program wrote as its result object (deploy/convert/llmhub_convert.py run_step); fields by step. */
export interface StepReport {
  ok: boolean;
  error?: string;
  /** export */
  inputDim?: number;
  outputDim?: number;
  /** validate, tensorrt */
  passed?: boolean;
  maxAbsError?: number;
  maxRelError?: number;
  tolerance?: number;
  samples?: number;
  publishedUri?: string;
  sha256?: string;
  sizeBytes?: number;
  /** tensorrt: `built`, or `not_run` with the reason (no GPU/TensorRT where the Job ran) */
  status?: 'built' | 'not_run';
  reason?: string;
  latency?: Latency;
  /** profile */
  runs?: number;
  batch?: number;
  p50Ms?: number;
  p95Ms?: number;
  meanMs?: number;
  device?: string;
}

export interface Latency {
  runs: number;
  batch: number;
  p50Ms: number;
  p95Ms: number;
  meanMs: number;
  device: string;
}

export interface ValidationResult {
  passed: boolean;
  maxAbsError: number;
  maxRelError: number;
  tolerance: number;
  samples: number;
}

export interface TargetResult {
  target: ConversionTarget;
  /** published: checked and in the Triton layout; failed: with the reason (e.g. the measured error); not_run: with why. */
  status: 'published' | 'failed' | 'not_run';
  reason?: string;
  validation?: ValidationResult;
  latency?: Latency;
  artifact?: { uri: string; sha256: string; sizeBytes: number };
  /** The Triton model name and its config.pbtxt, once published. */
  tritonModel?: string;
  configUri?: string;
}

/** running, then: succeeded (every target published), partial (some), failed (none), error (the run broke; not memoised). */
export type ConversionState = 'running' | 'succeeded' | 'partial' | 'failed' | 'error';

export interface ConversionResult {
  state: Exclude<ConversionState, 'running' | 'error'>;
  targets: TargetResult[];
  tritonRepositoryUri: string;
}

export type ConversionPhase =
  'exporting' | 'converting' | 'publishing' | ConversionResult['state'] | 'error' | 'cancelled';
export interface ConversionStatus {
  phase: ConversionPhase;
  targets: TargetResult[];
  error?: string;
}

export const stateOf = (targets: TargetResult[]): ConversionResult['state'] => {
  const published = targets.filter((t) => t.status === 'published').length;
  return published === targets.length ? 'succeeded' : published > 0 ? 'partial' : 'failed';
};

export const ConversionFailures = {
  /** One target's step failed (e.g. out of tolerance): that target's outcome, not the run's. */
  stepFailed: 'ConversionStepFailed',
  refused: 'ConversionRefused',
  /** A step's Job was deleted under the activity (a cancel, or by hand): retried, which submits it again. */
  jobDeleted: 'ConversionJobDeleted',
  /** The run broke (not a target's outcome): phase `error`, and the memo key is given up. */
  failed: 'ConversionFailed',
} as const;

export const TERMINAL_CONVERSION_PHASES: readonly ConversionPhase[] = [
  'succeeded',
  'partial',
  'failed',
  'error',
  'cancelled',
];

/** Conversion of a model version to ONNX / int8 ONNX / TensorRT (POST /v1/conversions); memoised by content hash. */
export const conversionContract = {
  kind: 'conversion',
  workflowType: 'convertModel',
  resource: 'conversion',
  idField: 'conversionId',
  statusQuery: defineQuery<ConversionStatus>('status'),
  terminalPhases: TERMINAL_CONVERSION_PHASES,
} as const satisfies OperationContract<ConversionStatus>;
