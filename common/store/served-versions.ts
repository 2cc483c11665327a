import type { Pool } from 'pg';
import type { AutoscalingSpec } from '../../contracts/autoscaling';

/** A served version as its replicas' owner needs it (migration 0016). `spec` is the applied ModelServerSpec. */
export interface ServedVersionRow<Spec = unknown> {
  tenantId: string;
  modelId: string;
  version: string;
  cluster: string;
  spec: Spec;
  autoscaling: AutoscalingSpec | null;
  cold: boolean;
}

type Key = { tenantId: string; modelId: string; version: string };

/**
 * Who owns a served version's replicas after its rollout: its spec and autoscaling settings (written by the rollout
 * and the route settings), whether it has nothing running (`cold`), and wake-up requests from gateways, which the
 * api role turns into signals (api/autoscale-wakeups.ts).
 */
export class ServedVersionStore {
  constructor(private readonly db: Pool) {}

  /** The rollout's record of what it applied; settings are replaced, the cold flag is left to the autoscaler. */
  async record(v: Key & { cluster: string; spec: unknown; autoscaling: AutoscalingSpec | null }): Promise<void> {
    await this.db.query(
      `INSERT INTO served_versions (tenant_id, model_id, version, cluster, spec, autoscaling) VALUES ($1, $2, $3, $4, $5, $6)
       ON CONFLICT (tenant_id, model_id, version) DO UPDATE SET cluster = EXCLUDED.cluster, spec = EXCLUDED.spec,
         autoscaling = EXCLUDED.autoscaling, updated_at = now()`,
      [v.tenantId, v.modelId, v.version, v.cluster, JSON.stringify(v.spec), JSON.stringify(v.autoscaling)],
    );
  }

  /** False when the version was never recorded by a rollout (deployed before migration 0016): nothing to set. */
  async setAutoscaling(
    v: Key,
    autoscaling: AutoscalingSpec | null,
    q: Pick<Pool, 'query'> = this.db,
  ): Promise<boolean> {
    const { rowCount } = await q.query(
      `UPDATE served_versions SET autoscaling = $4, updated_at = now() WHERE tenant_id = $1 AND model_id = $2 AND version = $3`,
      [v.tenantId, v.modelId, v.version, JSON.stringify(autoscaling)],
    );
    return rowCount === 1;
  }

  async get<Spec>(v: Key): Promise<ServedVersionRow<Spec> | undefined> {
    const { rows } = await this.db.query<{
      cluster: string;
      spec: Spec;
      autoscaling: AutoscalingSpec | null;
      cold: boolean;
    }>(
      'SELECT cluster, spec, autoscaling, cold FROM served_versions WHERE tenant_id = $1 AND model_id = $2 AND version = $3',
      [v.tenantId, v.modelId, v.version],
    );
    const r = rows[0];
    return r && { ...v, cluster: r.cluster, spec: r.spec, autoscaling: r.autoscaling, cold: r.cold };
  }

  /** Cold: gateways hold the version's requests. Warm again bumps the epoch their held requests wait for. */
  async setCold(v: Key, cold: boolean): Promise<void> {
    await this.db.query(
      `UPDATE served_versions SET cold = $4, warm_epoch = warm_epoch + (CASE WHEN $4 THEN 0 ELSE 1 END), updated_at = now()
       WHERE tenant_id = $1 AND model_id = $2 AND version = $3`,
      [v.tenantId, v.modelId, v.version, cold],
    );
  }

  /** A gateway's wake-up request; one pending per version, however many requests and replicas ask. */
  async requestWake(v: Key): Promise<boolean> {
    const { rowCount } = await this.db.query(
      `UPDATE served_versions SET wake_requested_at = now()
       WHERE tenant_id = $1 AND model_id = $2 AND version = $3 AND wake_requested_at IS NULL`,
      [v.tenantId, v.modelId, v.version],
    );
    return rowCount === 1;
  }

  /** Takes the pending wake-ups (each once, whichever api replica asks first). */
  async takeWakes(): Promise<Key[]> {
    const { rows } = await this.db.query<{ tenant_id: string; model_id: string; version: string }>(
      `UPDATE served_versions SET wake_requested_at = NULL WHERE wake_requested_at IS NOT NULL
       RETURNING tenant_id, model_id, version`,
    );
    return rows.map((r) => ({ tenantId: r.tenant_id, modelId: r.model_id, version: r.version }));
  }
}
