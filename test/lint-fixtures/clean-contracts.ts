// lint-as: contracts/rollout.ts
// contracts/ is where messages and failure types get their names.
import type { Duration } from '@temporalio/common';
import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';
import type { ApprovalRequest } from './approvals';

export interface RolloutStatus {
  phase: 'Pending' | 'Running';
  pauseFor?: Duration;
}
export const rolloutStatusQuery = defineQuery<RolloutStatus>('status');
export const approveUpdate = defineUpdate<RolloutStatus, [ApprovalRequest]>('approve');
export const nudgeSignal = defineSignal('nudge');
export const RolloutFailures = { refused: 'RolloutRefused' } as const;
