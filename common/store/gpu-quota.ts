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

/** What holds a tenant's GPUs: serving Deployments, fine-tune runs, GPU conversion Jobs (TensorRT builds). */
export type ClaimKind = 'serving' | 'fine_tune' | 'conversion';
/** The kinds that wait in the tenant's queue; serving is granted or refused at once. */
type QueuedKind = Exclude<ClaimKind, 'serving'>;

export interface HeldGpus {
  serving: number;
  fineTunes: number;
  conversions: number;
}

export interface QuotaUsage {
  gpus: number;
  inUse: number;
  waiting: number;
  held: HeldGpus;
}

/** One tenant's GPUs for /metrics: its quota, what its granted claims hold and what waits, per kind. */
export interface TenantGpuState {
  tenantId: string;
  quota: number;
  inUse: Record<ClaimKind, number>;
  waiting: Record<QueuedKind, number>;
  /** Seconds the longest-waiting claim has waited (0: none waits). */
  oldestWaitSeconds: number;
}

/** A serving claim: granted at once or refused, never queued (a deploy past the quota is refused). */
export type ServingClaim = { granted: true } | { granted: false; quota: number; held: HeldGpus };

/** The served version a serving claim is for; it holds its GPUs while its Deployment runs, beyond its rollout. */
export const servingClaimKey = (v: { tenantId: string; cluster: string; modelId: string; version: string }): string =>
  `serving:${JSON.stringify([v.tenantId, v.cluster, v.modelId, v.version])}`;

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

async function heldBy(q: Pick<Pool, 'query'>, tenantId: string): Promise<HeldGpus> {
  const { rows } = await q.query<{ kind: ClaimKind; gpus: string }>(
    `SELECT kind, sum(gpus) AS gpus FROM gpu_claims
     WHERE tenant_id = $1 AND released_at IS NULL AND granted_at IS NOT NULL GROUP BY kind`,
    [tenantId],
  );
  const of = (kind: ClaimKind) => Number(rows.find((r) => r.kind === kind)?.gpus ?? 0);
  return { serving: of('serving'), fineTunes: of('fine_tune'), conversions: of('conversion') };
}

const lockTenant = (tx: Pick<Pool, 'query'>, tenantId: string) =>
  tx.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`gpu-quota/${tenantId}`]);

/**
 * Per-tenant GPU quota and the claims on it of serving, fine-tunes and GPU conversions. A queued claim (fine-tune,
 * conversion) is granted only when it is first in the tenant's queue (priority, then enqueue time) and fits beside the
 * granted ones, so a big run is not starved by smaller ones behind it. A serving claim is granted when it fits beside
 * the granted ones, else refused. Every decision takes a per-tenant advisory lock: two never both take the last GPU.
 */
export class GpuQuotaStore {
  constructor(private readonly db: Pool) {}

  async quotaOf(tenantId: string, q: Pick<Pool, 'query'> = this.db): Promise<number> {
    const { rows } = await q.query<{ gpus: number }>('SELECT gpus FROM gpu_quotas WHERE tenant_id = $1', [tenantId]);
    return rows[0]?.gpus ?? DEFAULT_GPU_QUOTA;
  }

  /** The quotas of these tenants in one query. */
  async quotasOf(tenantIds: string[]): Promise<Map<string, number>> {
    const { rows } = await this.db.query<{ tenant_id: string; gpus: number }>(
      'SELECT tenant_id, gpus FROM gpu_quotas WHERE tenant_id = ANY($1)',
      [tenantIds],
    );
    const held = new Map(rows.map((r) => [r.tenant_id, r.gpus]));
    return new Map(tenantIds.map((id) => [id, held.get(id) ?? DEFAULT_GPU_QUOTA]));
  }

  /**
   * Every tenant with a quota set or a live claim (the others use no GPUs and have the default quota), in two queries
   * that read only live claims (the partial queue index), so a scrape stays cheap however many runs have ended.
   */
  async overview(): Promise<TenantGpuState[]> {
    const { rows: quotas } = await this.db.query<{ tenant_id: string; gpus: number }>(
      `SELECT t.tenant_id, coalesce(q.gpus, $1) AS gpus
       FROM (SELECT tenant_id FROM gpu_quotas UNION SELECT tenant_id FROM gpu_claims WHERE released_at IS NULL) t
       LEFT JOIN gpu_quotas q USING (tenant_id)`,
      [DEFAULT_GPU_QUOTA],
    );
    const { rows: claims } = await this.db.query<{
      tenant_id: string;
      kind: ClaimKind;
      granted: boolean;
      claims: string;
      gpus: string;
      oldest: number;
    }>(
      `SELECT tenant_id, kind, granted_at IS NOT NULL AS granted, count(*) AS claims, sum(gpus) AS gpus,
              extract(epoch FROM clock_timestamp() - min(enqueued_at))::float8 AS oldest
       FROM gpu_claims WHERE released_at IS NULL GROUP BY 1, 2, 3`,
    );
    const byTenant = Map.groupBy(claims, (c) => c.tenant_id);
    return quotas.map((q) => {
      const mine = byTenant.get(q.tenant_id) ?? [];
      const held = (kind: ClaimKind) => Number(mine.find((c) => c.granted && c.kind === kind)?.gpus ?? 0);
      const waits = mine.filter((c) => !c.granted);
      const waiting = (kind: QueuedKind) => Number(waits.find((c) => c.kind === kind)?.claims ?? 0);
      return {
        tenantId: q.tenant_id,
        quota: q.gpus,
        inUse: { serving: held('serving'), fine_tune: held('fine_tune'), conversion: held('conversion') },
        waiting: { fine_tune: waiting('fine_tune'), conversion: waiting('conversion') },
        oldestWaitSeconds: Math.max(0, ...waits.map((c) => c.oldest)),
      };
    });
  }

  async setQuota(tenantId: string, gpus: number): Promise<void> {
    await this.db.query(
      `INSERT INTO gpu_quotas (tenant_id, gpus) VALUES ($1, $2)
       ON CONFLICT (tenant_id) DO UPDATE SET gpus = EXCLUDED.gpus, updated_at = now()`,
      [tenantId, gpus],
    );
  }

  async usage(tenantId: string): Promise<QuotaUsage> {
    const { rows } = await this.db.query<{ waiting: string }>(
      'SELECT count(*) AS waiting FROM gpu_claims WHERE tenant_id = $1 AND released_at IS NULL AND granted_at IS NULL',
      [tenantId],
    );
    const held = await heldBy(this.db, tenantId);
    return {
      gpus: await this.quotaOf(tenantId),
      inUse: held.serving + held.fineTunes + held.conversions,
      waiting: Number(rows[0]?.waiting ?? 0),
      held,
    };
  }

  /**
   * Claims a served version's GPUs (`gpus`: replicas × GPUs per replica) when they fit beside everything granted,
   * else refuses and says what holds the quota. Idempotent: a retry, or a version applied again, replaces its own
   * claim instead of adding to it. 0 GPUs releases what the version held.
   */
  async claimServing(key: string, tenantId: string, gpus: number): Promise<ServingClaim> {
    if (gpus === 0) {
      await this.releaseServing(key);
      return { granted: true };
    }
    return inTransaction(this.db, async (tx) => {
      await lockTenant(tx, tenantId);
      const quota = await this.quotaOf(tenantId, tx);
      const held = await heldBy(tx, tenantId);
      const { rows } = await tx.query<{ gpus: number }>(
        'SELECT gpus FROM gpu_claims WHERE workflow_id = $1 AND released_at IS NULL AND granted_at IS NOT NULL',
        [key],
      );
      const others = held.serving + held.fineTunes + held.conversions - (rows[0]?.gpus ?? 0);
      if (others + gpus > quota) return { granted: false, quota, held };
      await tx.query(
        `INSERT INTO gpu_claims (workflow_id, tenant_id, gpus, priority, kind, granted_at)
         VALUES ($1, $2, $3, 0, 'serving', clock_timestamp())
         ON CONFLICT (workflow_id) DO UPDATE SET gpus = EXCLUDED.gpus, granted_at = EXCLUDED.granted_at, released_at = NULL
         WHERE gpu_claims.kind = 'serving'`,
        [key, tenantId, gpus],
      );
      return { granted: true };
    });
  }

  /** Idempotent; a version that never claimed (deployed before serving claimed GPUs, or with none) has nothing to free. */
  async releaseServing(key: string): Promise<void> {
    await this.db.query(
      `UPDATE gpu_claims SET released_at = clock_timestamp() WHERE workflow_id = $1 AND kind = 'serving' AND released_at IS NULL`,
      [key],
    );
  }

  /**
   * Enqueues the run's claim (idempotent: a retry keeps its place) and grants it when it is its turn and fits.
   * Re-reads the quota every time, so a changed quota applies to waiting runs.
   */
  async tryClaim(c: {
    tenantId: string;
    workflowId: string;
    gpus: number;
    priority: number;
    kind?: QueuedKind;
  }): Promise<ClaimState> {
    return inTransaction(this.db, async (tx) => {
      await lockTenant(tx, c.tenantId);
      await tx.query(
        'INSERT INTO gpu_claims (workflow_id, tenant_id, gpus, priority, kind) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (workflow_id) DO NOTHING',
        [c.workflowId, c.tenantId, c.gpus, c.priority, c.kind ?? 'fine_tune'],
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
  async release(tenantId: string, workflowId: string, kind: QueuedKind = 'fine_tune'): Promise<void> {
    await this.db.query(
      `INSERT INTO gpu_claims (workflow_id, tenant_id, gpus, priority, kind, released_at) VALUES ($1, $2, 1, 0, $3, clock_timestamp())
       ON CONFLICT (workflow_id) DO UPDATE SET released_at = coalesce(gpu_claims.released_at, clock_timestamp())`,
      [workflowId, tenantId, kind],
    );
  }
}
