// lint-as: activities/example/index.ts
import { ApplicationFailure } from '@temporalio/common';

export const refuse = (why: string): ApplicationFailure =>
  ApplicationFailure.create({ message: why, type: 'InvalidInput', nonRetryable: true });
