import type { Pool } from 'pg';

export interface UsageRow {
  tenantId: string;
  projectId: string;
  modelId: string;
  version: string;
  subject: string;
  /** Epoch ms of the minute the requests finished in. */
  minute: number;
  requests: number;
  promptTokens: number;
  completionTokens: number;
}

/** Metered inference usage per tenant, project, model, version and caller, in minute rows that replicas add to. */
export class UsageStore {
  constructor(private readonly db: Pool) {}

  /** Adds a batch in one statement; rows must be unique by key (replicas aggregate before flushing). */
  async add(rows: UsageRow[]): Promise<void> {
    if (rows.length === 0) return;
    const col = <K extends keyof UsageRow>(k: K) => rows.map((r) => r[k]);
    await this.db.query(
      `INSERT INTO gateway_usage (tenant_id, project_id, model_id, version, subject, minute, requests, prompt_tokens, completion_tokens)
       SELECT t, p, m, v, s, to_timestamp(mi / 1000.0), r, pt, ct
       FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[])
         AS u(t, p, m, v, s, mi, r, pt, ct)
       ON CONFLICT (tenant_id, project_id, model_id, version, subject, minute) DO UPDATE SET
         requests = gateway_usage.requests + EXCLUDED.requests,
         prompt_tokens = gateway_usage.prompt_tokens + EXCLUDED.prompt_tokens,
         completion_tokens = gateway_usage.completion_tokens + EXCLUDED.completion_tokens`,
      [
        col('tenantId'),
        col('projectId'),
        col('modelId'),
        col('version'),
        col('subject'),
        col('minute'),
        col('requests'),
        col('promptTokens'),
        col('completionTokens'),
      ],
    );
  }

  /** A tenant's totals, optionally narrowed to a project, per (project, model, version). */
  async totals(tenantId: string, projectId?: string): Promise<Omit<UsageRow, 'tenantId' | 'subject' | 'minute'>[]> {
    const { rows } = await this.db.query<{
      project_id: string;
      model_id: string;
      version: string;
      requests: string;
      prompt: string;
      completion: string;
    }>(
      `SELECT project_id, model_id, version, sum(requests) AS requests, sum(prompt_tokens) AS prompt, sum(completion_tokens) AS completion
       FROM gateway_usage WHERE tenant_id = $1 AND ($2::text IS NULL OR project_id = $2)
       GROUP BY project_id, model_id, version ORDER BY project_id, model_id, version`,
      [tenantId, projectId ?? null],
    );
    return rows.map((r) => ({
      projectId: r.project_id,
      modelId: r.model_id,
      version: r.version,
      requests: Number(r.requests),
      promptTokens: Number(r.prompt),
      completionTokens: Number(r.completion),
    }));
  }
}
