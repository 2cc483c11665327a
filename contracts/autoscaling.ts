import { defineQuery, defineSignal } from '@temporalio/workflow';
import type { Duration } from './rollout';

/**
 * Load-driven replicas of one served version (POST /v1/deploy and PUT /v1/models/{id}/route `autoscaling`).
 * The target is per replica: the autoscaler wants `load / target` replicas, as the Kubernetes HPA does.
 */
export interface AutoscalingSpec {
  /** 0 allows scale to zero (after `scaleToZeroAfter` without traffic). */
  minReplicas: number;
  maxReplicas: number;
  target: { concurrency: number } | { tokensPerSecond: number };
  /** The scale-down stabilisation window: replicas go down only to the highest desired count seen over it. */
  scaleDownDelay: Duration;
  /** Time without a request after which a version with minReplicas 0 goes to 0 replicas. */
  scaleToZeroAfter: Duration;
}

export interface AutoscalerInput {
  tenantId: string;
  modelId: string;
  version: string;
  /** Carried over continue-as-new so the decision log and the stabilisation window survive it. */
  carried?: { decisions: AutoscaleDecision[]; recommendations: { at: number; desired: number }[] };
}

/** One pass of the autoscaler: what it measured, what it wanted and what it did. */
export interface AutoscaleDecision {
  /** When the decision was recorded, after the pass's reads and writes. */
  at: number;
  /**
   * When the load this decision rests on was read: the stabilisation window counts back from it. Absent in decisions
   * carried over from runs that did not record it.
   */
  measuredAt?: number;
  /** Per-replica load over the measurement window (concurrency or tokens/s, as the target says); null: nothing to scale on. */
  metric: number | null;
  /** Replicas before the decision (the Deployment's spec, or the process runtime's 0/1). */
  current: number;
  /** What the HPA rule wanted before the stabilisation window, the step bound and the quota. */
  desired: number;
  /** The replicas set; equal to `current` when nothing was written. */
  applied: number;
  reason:
    | 'steady'
    | 'scale_up'
    | 'scale_down'
    | 'scale_to_zero'
    | 'wake'
    | 'restore'
    | 'quota_capped'
    | 'yielded_to_rollout'
    | 'stopped';
  /** Why, in words (the rollout it yielded to, the quota that capped it). */
  message: string;
}

export type AutoscalerPhase = 'running' | 'yielding' | 'stopped';

export interface AutoscalerStatus {
  phase: AutoscalerPhase;
  tenantId: string;
  modelId: string;
  version: string;
  replicas: number;
  settings: AutoscalingSpec | null;
  /** The newest decisions (at most AUTOSCALER_LOG_SIZE), oldest first. */
  decisions: AutoscaleDecision[];
}

export const AUTOSCALER_LOG_SIZE = 200;
export const AUTOSCALER_WORKFLOW = 'autoscaleVersion';

/** One autoscaler per served version: signal-with-start finds the running one. */
export const autoscalerWorkflowId = (tenantId: string, modelId: string, version: string): string =>
  `autoscaler/${tenantId}/${modelId}/${version}`;

export const autoscalerStatusQuery = defineQuery<AutoscalerStatus>('status');
/** A request for the version reached a gateway while it had nothing running: scale it up now. */
export const autoscalerWakeSignal = defineSignal('wake');
