// lint-as: api/routes/example.ts
import type { Client } from '@temporalio/client';
import type { rolloutModel } from '../../workflows';

export const nudge = (client: Client, workflowId: string) =>
  client.workflow.signalWithStart<typeof rolloutModel>('rolloutModel', {
    workflowId,
    taskQueue: 'platform',
    signal: 'nudge',
    signalArgs: [],
  });
