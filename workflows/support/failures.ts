import { ActivityFailure, ChildWorkflowFailure } from '@temporalio/workflow';

/** The failure a person can act on: the innermost cause under activity and child-workflow wrappers. */
export function rootCause(err: unknown): unknown {
  let e = err;
  while ((e instanceof ChildWorkflowFailure || e instanceof ActivityFailure) && e.cause) e = e.cause;
  return e;
}

export function messageOf(err: unknown): string {
  const cause = rootCause(err);
  return cause instanceof Error ? cause.message : String(cause);
}
