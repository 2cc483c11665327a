// lint-as: api/routes/example.ts
import type { WorkflowHandle } from '@temporalio/client';

export const cancel = (handle: WorkflowHandle): Promise<void> => handle.signal('cancel');
