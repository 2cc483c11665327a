// lint-as: workflows/example.ts
// What a workflow may import: the SDK, contracts/, other workflows/ modules, and anything as a type.
import type { Duration } from '@temporalio/common';
import { condition, proxyActivities, setHandler } from '@temporalio/workflow';
import type { Buffer } from 'node:buffer';
import type { RolloutActivities } from '../activities/rollout';
import { type ServedRef } from '../activities/kubernetes';
import type { RolloutStatus } from '../common/rollout';
import { RolloutFailures, rolloutStatusQuery } from '../contracts/rollout';
import { messageOf } from './failures';

const acts = proxyActivities<RolloutActivities>({
  startToCloseTimeout: '1 minute',
  retry: { nonRetryableErrorTypes: [RolloutFailures.refused] },
});

export async function example(status: RolloutStatus, wait: Duration, served: ServedRef, raw: Buffer): Promise<string> {
  setHandler(rolloutStatusQuery, () => status);
  await condition(() => status.phase !== 'Pending', wait);
  await acts.applyVersion(served, raw.length);
  return messageOf(status);
}
