import type { Pool, PoolClient } from 'pg';
import { ConflictError } from '../errors';
import type { Queryable } from './pool';

/** The per-model rollout lock (0004_rollouts.sql). */
export class RolloutLockStore {
  constructor(private readonly db: Pool) {}

  /** Takes the model's lock for `workflowId`; answers the holder's deployment id when another rollout holds it. */
  async acquire(
    q: Queryable,
    l: { tenantId: string; modelId: string; deploymentId: string; workflowId: string },
  ): Promise<{ heldBy?: string }> {
    const { rows } = await q.query<{ deployment_id: string; workflow_id: string }>(
      `INSERT INTO rollout_locks (tenant_id, model_id, deployment_id, workflow_id) VALUES ($1, $2, $3, $4)
       ON CONFLICT (tenant_id, model_id) DO UPDATE SET tenant_id = rollout_locks.tenant_id
       RETURNING deployment_id, workflow_id`,
      [l.tenantId, l.modelId, l.deploymentId, l.workflowId],
    );
    return rows[0]!.workflow_id === l.workflowId ? {} : { heldBy: rows[0]!.deployment_id };
  }

  /**
   * The deployment id of the rollout holding the model's lock, if any. Inside a transaction it also locks the model's
   * row, which a rollout's `acquire` needs (its foreign key): no rollout can take the lock until `q` commits, so
   * what the caller does under this answer cannot interleave with a rollout starting.
   */
  async holder(q: Queryable, tenantId: string, modelId: string): Promise<string | undefined> {
    await q.query('SELECT 1 FROM models WHERE tenant_id = $1 AND id = $2 FOR UPDATE', [tenantId, modelId]);
    const { rows } = await q.query<{ deployment_id: string }>(
      'SELECT deployment_id FROM rollout_locks WHERE tenant_id = $1 AND model_id = $2',
      [tenantId, modelId],
    );
    return rows[0]?.deployment_id;
  }

  /**
   * Refuses (409, naming the rollout) a write to what a running rollout of the model owns: its route and provider
   * route. Taken under holder()'s row lock, so a rollout starting meanwhile waits for the caller's transaction.
   */
  async refuseWhileHeld(q: PoolClient, tenantId: string, modelId: string): Promise<void> {
    const heldBy = await this.holder(q, tenantId, modelId);
    if (heldBy)
      throw new ConflictError(
        `model '${modelId}' has a rollout in progress: '${heldBy}'; steer it through /v1/deployments/${heldBy}`,
        { deploymentId: heldBy },
      );
  }

  /** Idempotent, and only the holder's release counts, so a late retry never frees a newer rollout's lock. */
  async release(q: Queryable, tenantId: string, modelId: string, workflowId: string): Promise<void> {
    await q.query('DELETE FROM rollout_locks WHERE tenant_id = $1 AND model_id = $2 AND workflow_id = $3', [
      tenantId,
      modelId,
      workflowId,
    ]);
  }
}
