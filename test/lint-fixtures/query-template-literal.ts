// lint-as: test/integration/example.test.ts
import type { WorkflowHandle } from '@temporalio/client';

export const statusOf = (handle: WorkflowHandle): Promise<string> => handle.query(`status`);
