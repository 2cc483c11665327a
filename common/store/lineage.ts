import type { Pool } from 'pg';
import type { Queryable } from './pool';

export type LineageKind = 'fine_tune' | 'conversion' | 'rollout';

export interface LineageEntry {
  tenantId: string;
  modelId: string;
  version: string;
  kind: LineageKind;
  parent: { modelId: string; version: string } | null;
  workflowId: string;
  /** What the kind needs to reproduce the version, e.g. for a fine-tune the dataset hash, method and hyperparameters. */
  details: Record<string, unknown>;
  createdAt?: string;
}

interface Row {
  tenant_id: string;
  model_id: string;
  version: string;
  kind: LineageKind;
  parent_model_id: string | null;
  parent_version: string | null;
  workflow_id: string;
  details: Record<string, unknown>;
  created_at: Date;
}
const toEntry = (r: Row): LineageEntry => ({
  tenantId: r.tenant_id,
  modelId: r.model_id,
  version: r.version,
  kind: r.kind,
  parent:
    r.parent_model_id !== null && r.parent_version !== null
      ? { modelId: r.parent_model_id, version: r.parent_version }
      : null,
  workflowId: r.workflow_id,
  details: r.details,
  createdAt: r.created_at.toISOString(),
});

/** Where model versions came from: one entry per operation that made or changed a version. Scoped by tenant. */
export class LineageStore {
  constructor(private readonly db: Pool) {}

  /** Idempotent per (version, kind, workflow): a retried activity records the entry once. */
  async record(e: LineageEntry, q: Queryable = this.db): Promise<void> {
    await q.query(
      `INSERT INTO model_lineage (tenant_id, model_id, version, kind, parent_model_id, parent_version, workflow_id, details)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (tenant_id, model_id, version, kind, workflow_id) DO NOTHING`,
      [
        e.tenantId,
        e.modelId,
        e.version,
        e.kind,
        e.parent?.modelId ?? null,
        e.parent?.version ?? null,
        e.workflowId,
        JSON.stringify(e.details),
      ],
    );
  }

  async entriesOf(tenantId: string, modelId: string, version: string): Promise<LineageEntry[]> {
    const { rows } = await this.db.query<Row>(
      'SELECT * FROM model_lineage WHERE tenant_id = $1 AND model_id = $2 AND version = $3 ORDER BY created_at, id',
      [tenantId, modelId, version],
    );
    return rows.map(toEntry);
  }

  /** The version's entries, then its parent's, and so on up to a version with no recorded parent (nearest first). */
  async chainOf(tenantId: string, modelId: string, version: string): Promise<LineageEntry[]> {
    const { rows } = await this.db.query<Row>(
      `WITH RECURSIVE chain AS (
         SELECT l.*, 0 AS depth FROM model_lineage l WHERE tenant_id = $1 AND model_id = $2 AND version = $3
         UNION
         SELECT l.*, c.depth + 1 FROM model_lineage l JOIN chain c
           ON l.tenant_id = c.tenant_id AND l.model_id = c.parent_model_id AND l.version = c.parent_version
         WHERE c.depth < 100
       )
       SELECT * FROM chain ORDER BY depth, created_at, id`,
      [tenantId, modelId, version],
    );
    return rows.map(toEntry);
  }
}
