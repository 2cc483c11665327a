// lint-as: api/routes/example.ts
import type { WorkflowHandle } from '@temporalio/client';

export const statusOf = (handle: WorkflowHandle): Promise<string> => handle.query<string>('status');
