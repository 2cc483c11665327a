import { defineQuery, defineUpdate } from '@temporalio/workflow';
import type { SteeringRequest } from './approvals';
import type { AutoscalingSpec } from './autoscaling';
import type { OperationContract } from './operations';

/**
 * The rollout spec and status (plain data: the workflow imports these). The spec follows argo-rollouts' data model:
 * steps are one-key objects, analysis has thresholds with failure/inconclusive limits, and every measurement
 * has one of argo's phases.
 */

/** A Temporal/`ms` duration such as `30s`, `5m`, `1h`. */
export type Duration = string;
export const DURATION_PATTERN = '^[1-9][0-9]{0,6}(ms|s|m|h)$';

export type RolloutStep =
  | { setWeight: number }
  /** Without a duration the rollout waits for a person (resume or promote). */
  | { pause: { duration?: Duration } }
  /** Measures the canary until one measurement is Successful, or a limit is reached. */
  | { analysis: Record<string, never> }
  /** A manual gate only an approver opens (POST /v1/deployments/{id}/approve); an operator's resume or promote does not. */
  | { approval: Record<string, never> };

export interface AnalysisSpec {
  /** Time between two measurements of one analysis step. */
  interval: Duration;
  /** Lowest success rate (0-1) of the canary's gateway requests that still counts as Successful. */
  minSuccessRate: number;
  maxP95LatencyMs: number;
  /** Fewer canary requests than this in a window is Inconclusive: too little evidence either way. */
  minRequests: number;
  /** Consecutive Failed measurements that roll the canary back. */
  failureLimit: number;
  /** Consecutive Inconclusive measurements that pause the rollout for a person. */
  inconclusiveLimit: number;
}

export interface RolloutStrategy {
  steps: RolloutStep[];
  analysis: AnalysisSpec;
  /** How long the canary's pods may take to become ready before the rollout is rolled back. */
  readinessTimeout: Duration;
  /** Extra pod-template metadata of the canary (argo's canaryMetadata). */
  canaryMetadata: { annotations: Record<string, string>; labels: Record<string, string> };
}

/** A plain env value, or a reference to a Kubernetes Secret key: secret values never enter a request or a history. */
export type EnvValue = string | { secretRef: { name: string; key: string } };

export interface ServingResources {
  /** Kubernetes CPU quantity, e.g. `2` or `500m`. */
  cpu: string;
  gpu: number;
  memory: string;
}

export interface RolloutInput {
  tenantId: string;
  modelId: string;
  /** The canary's name in routes, metrics and the status: a version, or `provider:<ref>` for a provider canary. */
  version: string;
  /**
   * A provider canary: the provider (by route reference) the model's provider route sends the canary's weight to,
   * analysed from the gateway's metrics of `provider:<ref>`. Nothing is deployed; promotion makes it the provider
   * route's stable, a rollback removes it from the route.
   */
  provider?: string;
  /** The deployment id (the Idempotency-Key) the lock row and the API know the run by. */
  deploymentId: string;
  cluster: string;
  resources: ServingResources;
  env: Record<string, EnvValue>;
  strategy: RolloutStrategy;
  /** Hash of the request's strategy, shown in the status so an operator can tell two specs apart. */
  specHash: string;
  /** Load-driven replicas after promotion (the version's autoscaler owns them); absent: one replica. */
  autoscaling?: AutoscalingSpec;
}

export type MeasurementPhase = 'Successful' | 'Failed' | 'Inconclusive';

export interface AnalysisMeasurement {
  phase: MeasurementPhase;
  stepIndex: number;
  version: string;
  /** The window measured (epoch ms). */
  startedAt: number;
  finishedAt: number;
  requests: number;
  errors: number;
  successRate: number;
  p95LatencyMs: number | null;
  message: string;
}

export type RolloutPhase =
  | 'validating'
  | 'deploying'
  | 'waiting_ready'
  | 'probing'
  | 'progressing'
  | 'paused'
  | 'awaiting_approval'
  | 'promoting'
  | 'promoted'
  | 'rolling_back'
  | 'rolled_back';

export interface RolloutWeights {
  stable: string | null;
  canary: string | null;
  canaryWeight: number;
}

export interface RolloutStatus {
  phase: RolloutPhase;
  deploymentId: string;
  modelId: string;
  version: string;
  specHash: string;
  currentStepIndex: number;
  stepCount: number;
  weights: RolloutWeights;
  /** Why the rollout waits, when it does (argo's pause conditions). */
  pauseReason: 'step' | 'operator' | 'inconclusive' | 'approval' | null;
  /** Who opened each approval gate, in order. */
  approvals: { stepIndex: number; by: string; reason: string | null; at: number }[];
  analyses: AnalysisMeasurement[];
  startedAt: number;
  endpoint: string | null;
  /** Why the canary was rolled back. */
  failureReason: string | null;
  rollbackStartedAt: number | null;
  finishedAt: number | null;
}

export const TERMINAL_ROLLOUT_PHASES: readonly RolloutPhase[] = ['promoted', 'rolled_back'];

export const DEFAULT_ANALYSIS: AnalysisSpec = {
  interval: '30s',
  minSuccessRate: 0.95,
  maxP95LatencyMs: 10_000,
  minRequests: 20,
  failureLimit: 2,
  inconclusiveLimit: 5,
};

/** The seed's 10 → 25 → 50 → 100, each weight held for `hold` and then analysed. */
export const defaultSteps = (hold: Duration): RolloutStep[] =>
  [10, 25, 50, 100].flatMap((w): RolloutStep[] => [{ setWeight: w }, { pause: { duration: hold } }, { analysis: {} }]);

export const RolloutFailures = {
  versionNotReady: 'VersionNotReady',
  alreadyStable: 'AlreadyStable',
  probeFailed: 'ProbeFailed',
  rolloutInProgress: 'RolloutInProgress',
  /** The version could not be resolved; nothing was deployed. */
  refused: 'RolloutRefused',
  analysisFailed: 'AnalysisFailed',
  /** The run ended with the canary rolled back; the failure's details carry the final status. */
  rolledBack: 'RolledBack',
  invalidDuration: 'InvalidDuration',
  /** The version's GPUs do not fit in the tenant's GPU quota: refused before anything is applied. */
  gpuQuotaExceeded: 'GpuQuotaExceeded',
} as const;

/**
 * Steering Updates by URL action (POST /v1/deployments/{id}/{action}) and the role each needs. Approval gates are a
 * separate duty: an operator (who can pause, resume and abort) cannot open one.
 */
export const rolloutSteering = {
  pause: { update: defineUpdate<RolloutStatus, [SteeringRequest]>('pause'), role: 'operator' },
  resume: { update: defineUpdate<RolloutStatus, [SteeringRequest]>('resume'), role: 'operator' },
  promote: { update: defineUpdate<RolloutStatus, [SteeringRequest]>('promoteNow'), role: 'operator' },
  abort: { update: defineUpdate<RolloutStatus, [SteeringRequest]>('abort'), role: 'operator' },
  approve: { update: defineUpdate<RolloutStatus, [SteeringRequest]>('approve'), role: 'approver' },
} as const;

/** Canary rollout of a model version (POST /v1/deploy). */
export const rolloutContract = {
  kind: 'rollout',
  workflowType: 'rolloutModel',
  resource: 'deployment',
  idField: 'deploymentId',
  statusQuery: defineQuery<RolloutStatus>('status'),
  terminalPhases: TERMINAL_ROLLOUT_PHASES,
} as const satisfies OperationContract<RolloutStatus>;
