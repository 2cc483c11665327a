// lint-as: workflows/example.ts
import { defineQuery } from '@temporalio/workflow';

export const statusQuery = defineQuery<string>('status');
