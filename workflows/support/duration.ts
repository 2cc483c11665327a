import { ApplicationFailure } from '@temporalio/workflow';
import { RolloutFailures } from '../../contracts/rollout';

/** `ms`-style durations (validated by the API) to milliseconds. */
export function durationMs(d: string): number {
  const m = /^(\d+)(ms|s|m|h)$/.exec(d);
  if (!m) throw ApplicationFailure.nonRetryable(`invalid duration '${d}'`, RolloutFailures.invalidDuration);
  return Number(m[1]) * { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 }[m[2] as 'ms' | 's' | 'm' | 'h'];
}
