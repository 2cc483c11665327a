// lint-as: api/routes/example.ts
// api/ names messages and failure types through contracts/, and takes workflow types with `import type`.
import { ApplicationFailure } from '@temporalio/common';
import type { Client } from '@temporalio/client';
import type { KnowledgeActivities } from '../../activities/knowledge';
import type { rolloutModel } from '../../workflows';
import { approveUpdate, nudgeSignal, RolloutFailures, rolloutStatusQuery } from '../../contracts/rollout';

export async function example(client: Client, workflowId: string, acts: KnowledgeActivities) {
  const handle = client.workflow.getHandle<typeof rolloutModel>(workflowId);
  const status = await handle.query(rolloutStatusQuery);
  await handle.executeUpdate(approveUpdate, { args: [{ by: 'admin' }] });
  await handle.signal(nudgeSignal);
  await client.workflow.signalWithStart('rolloutModel', {
    workflowId,
    taskQueue: 'platform',
    signal: nudgeSignal,
    signalArgs: [],
  });
  if (status.phase === 'Pending')
    throw ApplicationFailure.nonRetryable(`refused ${workflowId}`, RolloutFailures.refused);
  return acts;
}
