import type { PoolClient } from 'pg';
import type { Queryable } from './pool';
import { IdempotencyMismatchError } from '../errors';

export interface IdempotencyClaim {
  /** True for the first request with this key; false for a repeat of the same body. */
  fresh: boolean;
  workflowId: string;
}

/**
 * Claims (tenant, kind, key) for a request body. Concurrent claims serialise on the primary key:
 * the losers wait for the winner's transaction and then see its row. A repeat with another body is a 422. On a pool
 * (no transaction) a fresh claim is one statement.
 */
export async function claimIdempotencyKey(
  c: Queryable,
  k: { tenantId: string; kind: string; key: string; bodyHash: string; workflowId: string },
): Promise<IdempotencyClaim> {
  const ins = await c.query(
    `INSERT INTO idempotency_keys (tenant_id, kind, key, body_hash, workflow_id) VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT DO NOTHING`,
    [k.tenantId, k.kind, k.key, k.bodyHash, k.workflowId],
  );
  if (ins.rowCount === 1) return { fresh: true, workflowId: k.workflowId };
  const { rows } = await c.query<{ body_hash: string; workflow_id: string }>(
    'SELECT body_hash, workflow_id FROM idempotency_keys WHERE tenant_id = $1 AND kind = $2 AND key = $3',
    [k.tenantId, k.kind, k.key],
  );
  const row = rows[0];
  if (!row) throw new Error('idempotency record vanished');
  if (row.body_hash !== k.bodyHash) throw new IdempotencyMismatchError(k.key);
  return { fresh: false, workflowId: row.workflow_id };
}

export async function releaseIdempotencyKey(
  c: PoolClient,
  k: { tenantId: string; kind: string; key: string },
): Promise<void> {
  await c.query('DELETE FROM idempotency_keys WHERE tenant_id = $1 AND kind = $2 AND key = $3', [
    k.tenantId,
    k.kind,
    k.key,
  ]);
}
