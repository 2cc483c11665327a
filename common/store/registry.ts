import type { Pool } from 'pg';
import type { ArtifactInfo } from '../../contracts/model-registry';
import type { ServingResources } from '../../contracts/rollout';
import type { Model, ModelMetadata, ModelVersion, ModelVersionState } from '../types';
import { cursorTime, KeyPart, keysetPage, type Keyset, type Page, type PageQuery } from './pages';
import type { Queryable } from './pool';

const MODEL_COLUMNS =
  'id, name, description, created_at, model_type, context_length, parameter_count, weight_precision, resources';
interface ModelRow {
  id: string;
  name: string;
  description: string;
  created_at: Date;
  model_type: ModelMetadata['type'];
  context_length: number | null;
  parameter_count: string | null;
  weight_precision: ModelMetadata['precision'];
  resources: ServingResources | null;
}
const toModel = (r: ModelRow): Model => ({
  id: r.id,
  name: r.name,
  description: r.description,
  type: r.model_type,
  contextLength: r.context_length,
  parameterCount: r.parameter_count === null ? null : Number(r.parameter_count),
  precision: r.weight_precision,
  resources: r.resources,
  createdAt: r.created_at.toISOString(),
});

interface VersionRow {
  model_id: string;
  version: string;
  artifact_uri: string;
  state: ModelVersionState;
  size_bytes: string | null;
  checksum: string | null;
  etag: string | null;
  failure_reason: string | null;
  workflow_id: string;
  created_at: Date;
  updated_at: Date;
}
const toVersion = (r: VersionRow): ModelVersion => ({
  modelId: r.model_id,
  version: r.version,
  artifactUri: r.artifact_uri,
  state: r.state,
  sizeBytes: r.size_bytes === null ? null : Number(r.size_bytes),
  checksum: r.checksum,
  etag: r.etag,
  failureReason: r.failure_reason,
  workflowId: r.workflow_id,
  createdAt: r.created_at.toISOString(),
  updatedAt: r.updated_at.toISOString(),
});
export const MODEL_KEYS: Keyset<Model> = { list: 'models', parts: [KeyPart.text], keyOf: (m) => [m.id] };
export const VERSION_KEYS: Keyset<VersionRow & { created_key: string }> = {
  list: 'model-versions',
  parts: [KeyPart.time, KeyPart.text],
  keyOf: (r) => [r.created_key, r.version],
};

/** The model registry: models, their versions and each version's state. Every query is scoped by tenant. */
export class RegistryStore {
  constructor(private readonly db: Pool) {}

  /** Creates the model; returns false when the tenant already has one with this id. */
  async createModel(
    tenantId: string,
    m: { id: string; name: string; description: string } & Partial<ModelMetadata>,
  ): Promise<Model | undefined> {
    const { rows } = await this.db.query<ModelRow>(
      `INSERT INTO models (tenant_id, id, name, description, model_type, context_length, parameter_count,
                           weight_precision, resources)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
       ON CONFLICT DO NOTHING RETURNING ${MODEL_COLUMNS}`,
      [
        tenantId,
        m.id,
        m.name,
        m.description,
        m.type ?? null,
        m.contextLength ?? null,
        m.parameterCount ?? null,
        m.precision ?? null,
        m.resources ? JSON.stringify(m.resources) : null,
      ],
    );
    return rows[0] ? toModel(rows[0]) : undefined;
  }

  async listModels(tenantId: string, q: PageQuery): Promise<Page<Model>> {
    return keysetPage(MODEL_KEYS, q, async (after, take) => {
      const { rows } = await this.db.query<ModelRow>(
        `SELECT ${MODEL_COLUMNS} FROM models WHERE tenant_id = $1 AND ($2::text IS NULL OR id > $2) ORDER BY id LIMIT $3`,
        [tenantId, after?.[0] ?? null, take],
      );
      return rows.map(toModel);
    });
  }

  async getModel(tenantId: string, id: string, q: Queryable = this.db): Promise<Model | undefined> {
    const { rows } = await q.query<ModelRow>(`SELECT ${MODEL_COLUMNS} FROM models WHERE tenant_id = $1 AND id = $2`, [
      tenantId,
      id,
    ]);
    return rows[0] ? toModel(rows[0]) : undefined;
  }

  /** Inserts a version in state `registering`; returns the existing row instead when there is one. */
  async insertVersion(
    q: Queryable,
    tenantId: string,
    v: { modelId: string; version: string; artifactUri: string; workflowId: string },
  ): Promise<{ created: boolean; version: ModelVersion }> {
    const ins = await q.query<VersionRow>(
      `INSERT INTO model_versions (tenant_id, model_id, version, artifact_uri, state, workflow_id)
       VALUES ($1, $2, $3, $4, 'registering', $5) ON CONFLICT DO NOTHING RETURNING *`,
      [tenantId, v.modelId, v.version, v.artifactUri, v.workflowId],
    );
    if (ins.rows[0]) return { created: true, version: toVersion(ins.rows[0]) };
    const existing = await this.getVersion(tenantId, v.modelId, v.version, q);
    if (!existing) throw new Error('model version vanished during insert');
    return { created: false, version: existing };
  }

  async deleteVersion(q: Queryable, tenantId: string, modelId: string, version: string): Promise<void> {
    await q.query('DELETE FROM model_versions WHERE tenant_id = $1 AND model_id = $2 AND version = $3', [
      tenantId,
      modelId,
      version,
    ]);
  }

  async getVersion(
    tenantId: string,
    modelId: string,
    version: string,
    q: Queryable = this.db,
  ): Promise<ModelVersion | undefined> {
    const { rows } = await q.query<VersionRow>(
      'SELECT * FROM model_versions WHERE tenant_id = $1 AND model_id = $2 AND version = $3',
      [tenantId, modelId, version],
    );
    return rows[0] ? toVersion(rows[0]) : undefined;
  }

  async listVersions(tenantId: string, modelId: string): Promise<ModelVersion[]> {
    const { rows } = await this.db.query<VersionRow>(
      'SELECT * FROM model_versions WHERE tenant_id = $1 AND model_id = $2 ORDER BY created_at, version',
      [tenantId, modelId],
    );
    return rows.map(toVersion);
  }

  /** A page of a model's versions, oldest first. */
  async pageVersions(tenantId: string, modelId: string, q: PageQuery): Promise<Page<ModelVersion>> {
    const page = await keysetPage(VERSION_KEYS, q, async (after, take) => {
      const { rows } = await this.db.query<VersionRow & { created_key: string }>(
        `SELECT *, ${cursorTime('created_at')} AS created_key FROM model_versions
         WHERE tenant_id = $1 AND model_id = $2 AND ($3::timestamptz IS NULL OR (created_at, version) > ($3, $4))
         ORDER BY created_at, version LIMIT $5`,
        [tenantId, modelId, after?.[0] ?? null, after?.[1] ?? null, take],
      );
      return rows;
    });
    return { items: page.items.map(toVersion), nextCursor: page.nextCursor };
  }

  /** Idempotent: re-running it with the same facts leaves the same row. */
  async markVersionReady(tenantId: string, modelId: string, version: string, a: ArtifactInfo): Promise<void> {
    await this.db.query(
      `UPDATE model_versions SET state = 'ready', size_bytes = $4, checksum = $5, etag = $6, failure_reason = NULL, updated_at = now()
       WHERE tenant_id = $1 AND model_id = $2 AND version = $3`,
      [tenantId, modelId, version, a.sizeBytes, a.checksum, a.etag],
    );
  }

  async markVersionFailed(tenantId: string, modelId: string, version: string, reason: string): Promise<void> {
    await this.db.query(
      `UPDATE model_versions SET state = 'failed', failure_reason = $4, updated_at = now()
       WHERE tenant_id = $1 AND model_id = $2 AND version = $3`,
      [tenantId, modelId, version, reason],
    );
  }
}
