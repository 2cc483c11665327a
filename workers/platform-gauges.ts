import { Client } from '@temporalio/client';
import type { NativeConnection } from '@temporalio/worker';
import type { Pool } from 'pg';
import { Gauge, type Registry } from 'prom-client';
import type { Logger } from '../common/logger';
import { GpuQuotaStore } from '../common/store/gpu-quota';
import { rolloutContract, type RolloutPhase } from '../contracts/rollout';
import { PhaseKey } from '../contracts/search-attributes';

const ROLLOUT_PHASES = Object.keys({
  validating: true,
  deploying: true,
  waiting_ready: true,
  probing: true,
  progressing: true,
  paused: true,
  awaiting_approval: true,
  promoting: true,
  promoted: true,
  rolling_back: true,
  rolled_back: true,
} satisfies Record<RolloutPhase, true>) as RolloutPhase[];

/** The gauges' metrics are collected concurrently: one read of the state serves every gauge of a scrape. */
const SCRAPE_COALESCE_MS = 1_000;
const TEMPORAL_PROBE_MS = 5_000;

/**
 * Platform-wide state read at scrape time, from PostgreSQL (GPU quotas and queues) and Temporal (its reachability,
 * running rollouts by phase from the Phase search attribute). Every worker exports the same values, so dashboards and
 * alerts take the max over instances. A read that fails leaves the last values (Temporal's reachability goes to 0).
 */
export function registerPlatformGauges(
  registry: Registry,
  deps: { db: Pool; connection: NativeConnection; namespace: string; logger: Pick<Logger, 'warn'> },
): void {
  const gpus = new GpuQuotaStore(deps.db);
  const client = new Client({ connection: deps.connection, namespace: deps.namespace });
  let last: { at: number; done: Promise<void> } | undefined;
  const collect = (): Promise<void> => {
    if (!last || Date.now() - last.at > SCRAPE_COALESCE_MS) last = { at: Date.now(), done: refresh() };
    return last.done;
  };
  const gauge = (name: string, help: string, labelNames: string[] = []) =>
    new Gauge({ name, help, labelNames, registers: [registry], collect });

  const reachable = gauge(
    'llmhub_temporal_reachable',
    'Whether the Temporal frontend answered this worker (1) or not (0)',
  );
  const rollouts = gauge('llmhub_rollouts_running', 'Rollouts in progress, by phase', ['phase']);
  const quota = gauge('llmhub_gpu_quota_gpus', "The tenant's GPU quota", ['tenant']);
  const inUse = gauge('llmhub_gpu_in_use_gpus', "GPUs the tenant's granted claims hold, by kind", ['tenant', 'kind']);
  const waiting = gauge('llmhub_gpu_queue_waiting_claims', 'Claims waiting in the GPU queue, by kind', [
    'tenant',
    'kind',
  ]);
  const oldestWait = gauge(
    'llmhub_gpu_queue_oldest_wait_seconds',
    "How long the tenant's longest-waiting GPU claim has waited (0: none waits)",
    ['tenant'],
  );

  async function refresh(): Promise<void> {
    await Promise.all([temporalState(), gpuState()]);
  }

  async function temporalState(): Promise<void> {
    try {
      await deps.connection.withDeadline(Date.now() + TEMPORAL_PROBE_MS, () =>
        deps.connection.workflowService.getSystemInfo({}),
      );
      reachable.set(1);
    } catch (err) {
      deps.logger.warn({ err }, 'metrics: the Temporal frontend did not answer');
      reachable.set(0);
      return;
    }
    try {
      const counts = new Map(ROLLOUT_PHASES.map((phase) => [phase, 0]));
      const query = `WorkflowType = '${rolloutContract.workflowType}' AND ExecutionStatus = 'Running'`;
      for await (const run of client.workflow.list({ query })) {
        const phase = run.typedSearchAttributes.get(PhaseKey) as RolloutPhase | undefined;
        if (phase && counts.has(phase)) counts.set(phase, counts.get(phase)! + 1);
      }
      for (const [phase, n] of counts) rollouts.set({ phase }, n);
    } catch (err) {
      deps.logger.warn({ err }, 'metrics: listing the running rollouts failed');
    }
  }

  async function gpuState(): Promise<void> {
    let tenants;
    try {
      tenants = await gpus.overview();
    } catch (err) {
      deps.logger.warn({ err }, 'metrics: reading the GPU quotas failed');
      return;
    }
    // Reset first: a tenant that no longer has a quota or claims drops out instead of keeping its last values.
    for (const g of [quota, inUse, waiting, oldestWait]) g.reset();
    for (const t of tenants) {
      quota.set({ tenant: t.tenantId }, t.quota);
      for (const [kind, n] of Object.entries(t.inUse)) inUse.set({ tenant: t.tenantId, kind }, n);
      for (const [kind, n] of Object.entries(t.waiting)) waiting.set({ tenant: t.tenantId, kind }, n);
      oldestWait.set({ tenant: t.tenantId }, t.oldestWaitSeconds);
    }
  }
}
