// lint-as: api/routes/example.ts
import type { WorkflowHandle } from '@temporalio/client';

export const approve = (handle: WorkflowHandle, by: string): Promise<void> =>
  handle.executeUpdate('approval', { args: [{ by }] });
