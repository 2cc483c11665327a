import { Counter, type Metric } from 'prom-client';
import type { MeasurementPhase } from '../../contracts/rollout';

export const ROLLBACK_REASONS = ['analysis_failed', 'readiness_timeout', 'probe_failed', 'aborted', 'error'] as const;
export type RollbackReason = (typeof ROLLBACK_REASONS)[number];

const MEASUREMENT_PHASES = Object.keys({
  Successful: true,
  Failed: true,
  Inconclusive: true,
} satisfies Record<MeasurementPhase, true>) as MeasurementPhase[];

/** Registered into each worker's /metrics registry (workers/metrics.ts). */
export const rolloutAlertsTotal = new Counter({
  name: 'llmhub_rollout_alerts_total',
  help: 'Rollout alerts (automatic rollbacks and aborts) by outcome',
  labelNames: ['tenant', 'model', 'reason'],
  registers: [],
});

// The two below are labelled by closed sets only and start at 0 for every label value: an alert on a counter's
// increase never fires for the first event of a series that did not exist before it.
export const rolloutRollbacksTotal = new Counter({
  name: 'llmhub_rollout_rollbacks_total',
  help: 'Rollouts rolled back (automatically or aborted), by reason; which model is on llmhub_rollout_alerts_total',
  labelNames: ['reason'],
  registers: [],
});
for (const reason of ROLLBACK_REASONS) rolloutRollbacksTotal.inc({ reason }, 0);

export const rolloutAnalysesTotal = new Counter({
  name: 'llmhub_rollout_analyses_total',
  help: "Canary analysis measurements by result (argo's phases)",
  labelNames: ['phase'],
  registers: [],
});
for (const phase of MEASUREMENT_PHASES) rolloutAnalysesTotal.inc({ phase }, 0);

export const rolloutMetrics: Metric[] = [rolloutAlertsTotal, rolloutRollbacksTotal, rolloutAnalysesTotal];
