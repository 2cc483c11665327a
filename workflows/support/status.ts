import { setHandler, upsertSearchAttributes, type QueryDefinition } from '@temporalio/workflow';
import { PhaseKey } from '../../contracts/search-attributes';

/**
 * Answers the operation's status query from `status` and returns `enter`, which moves the status's phase field and
 * the `Phase` search attribute together: what the API reads and what the Temporal UI lists never disagree.
 */
export function trackStatus<S, K extends keyof S>(
  query: QueryDefinition<S>,
  status: S,
  field: K,
): (phase: S[K] & string) => void {
  setHandler(query, () => status);
  return (phase) => {
    status[field] = phase;
    upsertSearchAttributes([{ key: PhaseKey, value: phase }]);
  };
}
