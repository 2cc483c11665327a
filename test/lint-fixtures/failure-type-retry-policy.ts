// lint-as: workflows/example.ts
import { proxyActivities } from '@temporalio/workflow';
import type { RolloutActivities } from '../activities/rollout';

export const acts = proxyActivities<RolloutActivities>({
  startToCloseTimeout: '1 minute',
  retry: { nonRetryableErrorTypes: ['InvalidInput'] },
});
