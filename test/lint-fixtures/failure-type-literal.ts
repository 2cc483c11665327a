// lint-as: activities/example/index.ts
import { ApplicationFailure } from '@temporalio/common';

export const refuse = (why: string): never => {
  throw ApplicationFailure.nonRetryable(why, 'InvalidInput');
};
