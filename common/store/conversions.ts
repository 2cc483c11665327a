import type { Pool } from 'pg';
import { inTransaction, type Queryable } from './pool';
import type {
  ConversionOptions,
  ConversionResult,
  ConversionState,
  ConversionTarget,
  TargetResult,
} from '../../contracts/conversion';

export interface ConversionRecord {
  conversionId: string;
  workflowId: string;
  modelId: string;
  version: string;
  memoKey: string;
  toolchainVersion: string;
  options: ConversionOptions;
  state: ConversionState;
  targets: TargetResult[];
  tritonRepositoryUri: string | null;
  error: string | null;
  createdAt: string;
  updatedAt: string;
}

export interface ModelArtifact {
  kind: ConversionTarget;
  uri: string;
  sha256: string;
  sizeBytes: number;
  tritonRepositoryUri: string;
  conversionWorkflowId: string;
  createdAt: string;
}

interface Row {
  conversion_id: string;
  workflow_id: string;
  model_id: string;
  version: string;
  memo_key: string;
  toolchain_version: string;
  options: ConversionOptions;
  state: ConversionState;
  targets: TargetResult[];
  triton_repository_uri: string | null;
  error: string | null;
  created_at: Date;
  updated_at: Date;
}
const toRecord = (r: Row): ConversionRecord => ({
  conversionId: r.conversion_id,
  workflowId: r.workflow_id,
  modelId: r.model_id,
  version: r.version,
  memoKey: r.memo_key,
  toolchainVersion: r.toolchain_version,
  options: r.options,
  state: r.state,
  targets: r.targets,
  tritonRepositoryUri: r.triton_repository_uri,
  error: r.error,
  createdAt: r.created_at.toISOString(),
  updatedAt: r.updated_at.toISOString(),
});

/** Conversions, which are also the memo (0007_conversions.sql), and the artifacts they register. Scoped by tenant. */
export class ConversionStore {
  constructor(private readonly db: Pool) {}

  /**
   * Records a new conversion as the memo key's builder; when another live conversion holds the key, nothing is
   * written and that conversion is returned, so one (artifact, options, toolchain) never builds twice.
   */
  async claim(
    q: Queryable,
    tenantId: string,
    c: {
      conversionId: string;
      workflowId: string;
      modelId: string;
      version: string;
      memoKey: string;
      toolchainVersion: string;
      options: ConversionOptions;
    },
  ): Promise<{ existing?: ConversionRecord }> {
    const ins = await q.query(
      `INSERT INTO conversions (tenant_id, conversion_id, workflow_id, model_id, version, memo_key, toolchain_version, options, state)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'running')
       ON CONFLICT (tenant_id, memo_key) WHERE state <> 'error' DO NOTHING`,
      [
        tenantId,
        c.conversionId,
        c.workflowId,
        c.modelId,
        c.version,
        c.memoKey,
        c.toolchainVersion,
        JSON.stringify(c.options),
      ],
    );
    if (ins.rowCount === 1) return {};
    const existing = await this.byMemoKey(tenantId, c.memoKey, q);
    if (!existing) throw new Error('memoised conversion vanished during claim');
    return { existing };
  }

  /** Undoes `claim` when the workflow could not be started. */
  async remove(q: Queryable, tenantId: string, workflowId: string): Promise<void> {
    await q.query('DELETE FROM conversions WHERE tenant_id = $1 AND workflow_id = $2', [tenantId, workflowId]);
  }

  async byMemoKey(tenantId: string, memoKey: string, q: Queryable = this.db): Promise<ConversionRecord | undefined> {
    const { rows } = await q.query<Row>(
      `SELECT * FROM conversions WHERE tenant_id = $1 AND memo_key = $2 AND state <> 'error'`,
      [tenantId, memoKey],
    );
    return rows[0] ? toRecord(rows[0]) : undefined;
  }

  async get(tenantId: string, conversionId: string): Promise<ConversionRecord | undefined> {
    const { rows } = await this.db.query<Row>('SELECT * FROM conversions WHERE tenant_id = $1 AND conversion_id = $2', [
      tenantId,
      conversionId,
    ]);
    return rows[0] ? toRecord(rows[0]) : undefined;
  }

  /** Idempotent: the outcome and the version's artifacts commit together, and a retry writes the same. */
  async complete(tenantId: string, workflowId: string, result: ConversionResult): Promise<void> {
    await inTransaction(this.db, async (c) => {
      const { rows } = await c.query<{ model_id: string; version: string }>(
        `UPDATE conversions SET state = $3, targets = $4, triton_repository_uri = $5, error = NULL, updated_at = now()
         WHERE tenant_id = $1 AND workflow_id = $2 RETURNING model_id, version`,
        [tenantId, workflowId, result.state, JSON.stringify(result.targets), result.tritonRepositoryUri],
      );
      const row = rows[0];
      if (!row) throw new Error(`conversion ${workflowId} has no row`);
      for (const t of result.targets) {
        if (t.status !== 'published' || !t.artifact) continue;
        await c.query(
          `INSERT INTO model_artifacts (tenant_id, model_id, version, kind, uri, sha256, size_bytes, triton_repository_uri, conversion_workflow_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING`,
          [
            tenantId,
            row.model_id,
            row.version,
            t.target,
            t.artifact.uri,
            t.artifact.sha256,
            t.artifact.sizeBytes,
            result.tritonRepositoryUri,
            workflowId,
          ],
        );
      }
    });
  }

  /** The run broke (not a conversion outcome): the memo key is given up so the next request builds again. */
  async markError(tenantId: string, workflowId: string, error: string): Promise<void> {
    await this.db.query(
      `UPDATE conversions SET state = 'error', error = $3, updated_at = now() WHERE tenant_id = $1 AND workflow_id = $2 AND state = 'running'`,
      [tenantId, workflowId, error],
    );
  }

  async artifactsOf(tenantId: string, modelId: string, version: string): Promise<ModelArtifact[]> {
    const { rows } = await this.db.query(
      'SELECT * FROM model_artifacts WHERE tenant_id = $1 AND model_id = $2 AND version = $3 ORDER BY created_at, kind, uri',
      [tenantId, modelId, version],
    );
    return rows.map((r) => ({
      kind: r.kind,
      uri: r.uri,
      sha256: r.sha256,
      sizeBytes: Number(r.size_bytes),
      tritonRepositoryUri: r.triton_repository_uri,
      conversionWorkflowId: r.conversion_workflow_id,
      createdAt: (r.created_at as Date).toISOString(),
    }));
  }
}
