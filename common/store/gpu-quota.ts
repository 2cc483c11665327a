import type { Pool } from 'pg';
import { DEFAULT_GPU_QUOTA } from '../../contracts/fine-tune';
import { inTransaction } from './pool';

export interface ClaimState {
  granted: boolean;
  /** The run gave its claim up (it ended); whoever still asks on its behalf must stop. */
  released: boolean;
  /** 1 for the next claim to be served; 0 once granted. */
  position: number;
  quota: number;
  /** GPUs the tenant's granted claims hold, this one included once granted. */
  inUse: number;
}

export interface QuotaUsage {
  gpus: number;
  inUse: number;
  waiting: number;
}

interface QueuedClaim {
  workflow_id: string;
  gpus: number;
  granted: boolean;
}

/** A tenant's live claims in the order they are served: priority, then enqueue time. */
async function queueOf(q: Pick<Pool, 'query'>, tenantId: string): Promise<QueuedClaim[]> {
  const { rows } = await q.query<QueuedClaim>(
    `SELECT workflow_id, gpus, granted_at IS NOT NULL AS granted FROM gpu_claims WHERE tenant_id = $1 AND released_at IS NULL
     ORDER BY priority DESC, enqueued_at, workflow_id`,
    [tenantId],
  );
  return rows;
}

/** 0 for a granted claim, else its place among the waiting ones (1: served next). */
const positionIn = (queue: QueuedClaim[], claim: QueuedClaim): number =>
  claim.granted ? 0 : queue.filter((r) => !r.granted).findIndex((r) => r.workflow_id === claim.workflow_id) + 1;

/**
 * Per-tenant GPU quota and the fine-tune runs' claims on it. A claim is granted only when it is first in the
 * tenant's queue (priority, then enqueue time) and fits beside the granted ones, so a big run is not starved by
 * smaller ones behind it. Every decision takes a per-tenant advisory lock: two runs never both take the last GPU.
 */
export class GpuQuotaStore {
  constructor(private readonly db: Pool) {}

  async quotaOf(tenantId: string, q: Pick<Pool, 'query'> = this.db): Promise<number> {
    const { rows } = await q.query<{ gpus: number }>('SELECT gpus FROM gpu_quotas WHERE tenant_id = $1', [tenantId]);
    return rows[0]?.gpus ?? DEFAULT_GPU_QUOTA;
  }

  async setQuota(tenantId: string, gpus: number): Promise<void> {
    await this.db.query(
      `INSERT INTO gpu_quotas (tenant_id, gpus) VALUES ($1, $2)
       ON CONFLICT (tenant_id) DO UPDATE SET gpus = EXCLUDED.gpus, updated_at = now()`,
      [tenantId, gpus],
    );
  }

  async usage(tenantId: string): Promise<QuotaUsage> {
    const { rows } = await this.db.query<{ in_use: string | null; waiting: string }>(
      `SELECT sum(gpus) FILTER (WHERE granted_at IS NOT NULL) AS in_use, count(*) FILTER (WHERE granted_at IS NULL) AS waiting
       FROM gpu_claims WHERE tenant_id = $1 AND released_at IS NULL`,
      [tenantId],
    );
    return {
      gpus: await this.quotaOf(tenantId),
      inUse: Number(rows[0]?.in_use ?? 0),
      waiting: Number(rows[0]?.waiting ?? 0),
    };
  }

  /**
   * Enqueues the run's claim (idempotent: a retry keeps its place) and grants it when it is its turn and fits.
   * Re-reads the quota every time, so a changed quota applies to waiting runs.
   */
  async tryClaim(c: { tenantId: string; workflowId: string; gpus: number; priority: number }): Promise<ClaimState> {
    return inTransaction(this.db, async (tx) => {
      await tx.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`gpu-quota/${c.tenantId}`]);
      await tx.query(
        'INSERT INTO gpu_claims (workflow_id, tenant_id, gpus, priority) VALUES ($1, $2, $3, $4) ON CONFLICT (workflow_id) DO NOTHING',
        [c.workflowId, c.tenantId, c.gpus, c.priority],
      );
      const quota = await this.quotaOf(c.tenantId, tx);
      const rows = await queueOf(tx, c.tenantId);
      const inUse = rows.filter((r) => r.granted).reduce((n, r) => n + r.gpus, 0);
      const mine = rows.find((r) => r.workflow_id === c.workflowId);
      if (!mine) return { granted: false, released: true, position: 0, quota, inUse };
      const position = positionIn(rows, mine);
      if (position === 0) return { granted: true, released: false, position: 0, quota, inUse };
      if (position === 1 && inUse + mine.gpus <= quota) {
        await tx.query('UPDATE gpu_claims SET granted_at = clock_timestamp() WHERE workflow_id = $1', [c.workflowId]);
        return { granted: true, released: false, position: 0, quota, inUse: inUse + mine.gpus };
      }
      return { granted: false, released: false, position, quota, inUse };
    });
  }

  /** Where a waiting run stands (undefined: it holds or waits for nothing). */
  async positionOf(tenantId: string, workflowId: string): Promise<number | undefined> {
    const rows = await queueOf(this.db, tenantId);
    const mine = rows.find((r) => r.workflow_id === workflowId);
    return mine && positionIn(rows, mine);
  }

  /**
   * Idempotent. Releasing a waiting claim frees nothing, it only leaves the queue. The row stays as a tombstone (one is
   * written when the run never got to enqueue), so a queue wait still running for an ended run cannot enqueue again.
   */
  async release(tenantId: string, workflowId: string): Promise<void> {
    await this.db.query(
      `INSERT INTO gpu_claims (workflow_id, tenant_id, gpus, priority, released_at) VALUES ($1, $2, 1, 0, clock_timestamp())
       ON CONFLICT (workflow_id) DO UPDATE SET released_at = coalesce(gpu_claims.released_at, clock_timestamp())`,
      [workflowId, tenantId],
    );
  }
}
