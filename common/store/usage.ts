import type { Pool } from 'pg';
import { PRICED_USAGE } from './prices';

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

/** What a usage report can be grouped by; `tenant` only in the platform operators' report. */
export const USAGE_GROUPS = ['tenant', 'project', 'model', 'key', 'day', 'hour'] as const;
export type UsageGroup = (typeof USAGE_GROUPS)[number];

export interface UsageReportRow {
  tenant?: string;
  project?: string;
  model?: string;
  /** The caller's subject (`key:<id>` for an API key). */
  key?: string;
  /** YYYY-MM-DD (UTC) */
  day?: string;
  /** YYYY-MM-DDTHH:00:00Z */
  hour?: string;
  /** null for usage of a model without a price. */
  currency: string | null;
  requests: number;
  promptTokens: number;
  completionTokens: number;
  /** In `currency`, to the micro-unit; null without a price. */
  cost: number | null;
}

const GROUP_SQL: Record<UsageGroup, string> = {
  tenant: 'u.tenant_id',
  project: 'u.project_id',
  model: 'u.model_id',
  key: 'u.subject',
  day: `to_char(u.minute AT TIME ZONE 'UTC', 'YYYY-MM-DD')`,
  hour: `to_char(u.minute AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24":00:00Z"')`,
};

/**
 * Metered usage and its cost (PRICED_USAGE: the price in effect at each minute) between `from` (inclusive) and `to`
 * (exclusive), of one tenant or of all, summed per group and currency.
 */
export async function usageReport(
  db: Pick<Pool, 'query'>,
  q: { tenantId?: string; from: Date; to: Date; groupBy: readonly UsageGroup[] },
): Promise<UsageReportRow[]> {
  const groups = USAGE_GROUPS.filter((g) => q.groupBy.includes(g));
  const cols = groups.map((g) => `${GROUP_SQL[g]} AS "${g}"`);
  const keys = [...groups.map((g) => `"${g}"`), 'currency'];
  const { rows } = await db.query<Record<string, string | null>>(
    `SELECT ${[...cols, 'u.currency'].join(', ')}, sum(u.requests) AS requests, sum(u.prompt_tokens) AS prompt,
       sum(u.completion_tokens) AS completion, round(sum(u.cost), 6) AS cost
     FROM (${PRICED_USAGE} WHERE ($1::text IS NULL OR u.tenant_id = $1) AND u.minute >= $2 AND u.minute < $3) u
     GROUP BY ${keys.join(', ')} ORDER BY ${keys.map((k) => `${k} NULLS LAST`).join(', ')}`,
    [q.tenantId ?? null, q.from, q.to],
  );
  return rows.map((r) => ({
    ...Object.fromEntries(groups.map((g) => [g, r[g]!])),
    currency: r.currency ?? null,
    requests: Number(r.requests),
    promptTokens: Number(r.prompt),
    completionTokens: Number(r.completion),
    cost: r.cost === null || r.cost === undefined ? null : Number(r.cost),
  }));
}
