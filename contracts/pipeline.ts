/**
 * The pipeline (POST /v1/pipelines): fine-tune → conversion → optional approval → rollout, each a child workflow.
 * Plain data: the workflow imports these.
 */
import { defineQuery, defineUpdate } from '@temporalio/workflow';
import type { ApprovalRequest } from './approvals';
import type { ConversionOptions } from './conversion';
import type { FineTuneInput } from './fine-tune';
import type { OperationContract } from './operations';
import type { RolloutInput } from './rollout';

export interface PipelineInput {
  tenantId: string;
  /** The Idempotency-Key; the children's keys derive from it (`pipeline-<key>`). */
  pipelineId: string;
  /** Validated and defaulted by the API like POST /v1/fine-tunes; `fineTuneId` is the child's key. */
  fineTune: FineTuneInput;
  /** The version exists only after the fine-tune: the memo key and the conversion row are made then, in an activity. */
  conversion: { cluster: string; options: ConversionOptions };
  /** Like POST /v1/deploy; model and version are the fine-tune's output. */
  rollout: Omit<RolloutInput, 'modelId' | 'version'>;
  approvalBeforeRollout: boolean;
  /** How long the approval gate waits; unanswered means denied. */
  approvalTimeoutSeconds: number;
}

export type PipelineStage =
  'fine_tune' | 'conversion' | 'awaiting_approval' | 'rollout' | 'succeeded' | 'failed' | 'cancelled';
export const TERMINAL_PIPELINE_STAGES: readonly PipelineStage[] = ['succeeded', 'failed', 'cancelled'];

/** `waiting`: the conversion step waits for an identical conversion still running (the step's workflowId) to end. */
export type StepOutcome =
  'pending' | 'running' | 'succeeded' | 'failed' | 'cancelled' | 'skipped' | 'memoized' | 'waiting';
export interface PipelineStep {
  workflowId: string;
  outcome: StepOutcome;
  reason: string | null;
}

export interface PipelineStatus {
  pipelineId: string;
  stage: PipelineStage;
  /** The version the fine-tune produces, which is converted and rolled out. */
  model: { modelId: string; version: string };
  steps: { fineTune: PipelineStep; conversion: PipelineStep; rollout: PipelineStep };
  conversion: { state: string; tritonRepositoryUri: string; published: string[] } | null;
  awaitingApproval: boolean;
  approval: { decision: 'approve' | 'deny' | 'timed_out'; by: string | null; reason: string | null; at: number } | null;
  failureReason: string | null;
}

/** The children's ids: readable, derived from the pipeline's key, and each addressable through its own API. */
export const pipelineChildKey = (pipelineId: string): string => `pipeline-${pipelineId}`;

export const PipelineFailures = { failed: 'PipelineFailed' } as const;

/** Fine-tune → conversion → optional approval → rollout (POST /v1/pipelines). */
export const pipelineContract = {
  kind: 'pipeline',
  workflowType: 'runPipeline',
  resource: 'pipeline',
  idField: 'pipelineId',
  statusQuery: defineQuery<PipelineStatus>('status'),
  approvalUpdate: defineUpdate<PipelineStatus, [ApprovalRequest]>('approval'),
  terminalPhases: TERMINAL_PIPELINE_STAGES,
} as const satisfies OperationContract<PipelineStatus>;
