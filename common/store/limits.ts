import type { Pool, PoolClient } from 'pg';
import { KeyPart, keysetPage, type Keyset, type Page, type PageQuery } from './pages';
import { inTransaction } from './pool';

/**
 * The subject of the limit a platform operator sets on a whole tenant: it applies beside the tenant's own limits,
 * and tenants' routes can neither change nor remove it.
 */
export const CEILING_SUBJECT = 'platform';

/** The subject of a budget's window: `budget` for the whole tenant, `budget:<project>` for one project. */
export const budgetSubject = (projectId: string): string => (projectId ? `budget:${projectId}` : 'budget');

/** The calendar month (UTC) an instant falls in, as epoch ms: a budget's window. */
export function monthOf(ms: number): { start: number; end: number } {
  const d = new Date(ms);
  return {
    start: Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1),
    end: Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1),
  };
}

export interface LimitRule {
  tenantId: string;
  /** '' for the whole tenant, otherwise one caller (the principal's subject, e.g. `key:<id>`). */
  subject: string;
  windowSeconds: number;
  /** null: this dimension is not limited. */
  maxRequests: number | null;
  maxTokens: number | null;
  /**
   * Set on a budget (common/store/budgets.ts): maxTokens then counts micro-units of this currency (cost, not tokens) and
   * the window is the calendar month (UTC), not windowSeconds.
   */
  currency?: string;
}

export interface WindowRef {
  tenantId: string;
  subject: string;
  /** Epoch ms, aligned to the rule's window so every replica names the same window. */
  windowStart: number;
}

export const LIMIT_KEYS: Keyset<LimitRule> = { list: 'limits', parts: [KeyPart.text], keyOf: (l) => [l.subject] };

/** The limits a clause selects (every tenant's without one). */
export async function readLimits(
  q: Pick<PoolClient, 'query'>,
  where = '',
  params: unknown[] = [],
): Promise<LimitRule[]> {
  const { rows } = await q.query<{
    tenant_id: string;
    subject: string;
    window_seconds: number;
    max_requests: string | null;
    max_tokens: string | null;
  }>(`SELECT tenant_id, subject, window_seconds, max_requests, max_tokens FROM gateway_limits ${where}`, params);
  return rows.map((l) => ({
    tenantId: l.tenant_id,
    subject: l.subject,
    windowSeconds: l.window_seconds,
    maxRequests: l.max_requests === null ? null : Number(l.max_requests),
    maxTokens: l.max_tokens === null ? null : Number(l.max_tokens),
  }));
}

/**
 * Request and token limits shared by all gateway replicas. A window's allowance lives in one row; replicas take
 * slices of it with an atomic UPDATE (so the sum of all slices never exceeds the limit, however many replicas
 * ask at once) and hand back what they did not use.
 */
export class LimitStore {
  constructor(private readonly db: Pool) {}

  async setLimit(rule: LimitRule): Promise<void> {
    await this.db.query(
      `INSERT INTO gateway_limits (tenant_id, subject, window_seconds, max_requests, max_tokens) VALUES ($1, $2, $3, $4, $5)
       ON CONFLICT (tenant_id, subject) DO UPDATE SET window_seconds = EXCLUDED.window_seconds, max_requests = EXCLUDED.max_requests,
         max_tokens = EXCLUDED.max_tokens`,
      [rule.tenantId, rule.subject, rule.windowSeconds, rule.maxRequests, rule.maxTokens],
    );
  }

  /** False when the tenant had no limit for that subject. */
  async removeLimit(tenantId: string, subject: string): Promise<boolean> {
    const { rowCount } = await this.db.query('DELETE FROM gateway_limits WHERE tenant_id = $1 AND subject = $2', [
      tenantId,
      subject,
    ]);
    return rowCount === 1;
  }

  /** A page of the tenant's limits by subject; the subject '' (the whole tenant) sorts first. */
  async listLimits(tenantId: string, q: PageQuery): Promise<Page<LimitRule>> {
    return keysetPage(LIMIT_KEYS, q, (after, take) =>
      readLimits(this.db, 'WHERE tenant_id = $1 AND ($2::text IS NULL OR subject > $2) ORDER BY subject LIMIT $3', [
        tenantId,
        after?.[0] ?? null,
        take,
      ]),
    );
  }

  /** The platform's ceiling of each of these tenants that has one, in one query. */
  async ceilingsOf(tenantIds: string[]): Promise<Map<string, LimitRule>> {
    const rules = await readLimits(this.db, 'WHERE tenant_id = ANY($1) AND subject = $2', [tenantIds, CEILING_SUBJECT]);
    return new Map(rules.map((r) => [r.tenantId, r]));
  }

  /** Takes up to `requests`/`tokens` from the window (opening it at the rule's full allowance); returns what was granted. */
  async lease(
    rule: LimitRule,
    w: WindowRef,
    want: { requests: number; tokens: number },
  ): Promise<{ requests: number; tokens: number }> {
    const start = new Date(w.windowStart);
    await this.db.query(
      `INSERT INTO gateway_limit_windows (tenant_id, subject, window_start, requests_left, tokens_left) VALUES ($1, $2, $3, $4, $5)
       ON CONFLICT DO NOTHING`,
      [w.tenantId, w.subject, start, rule.maxRequests ?? 0, rule.maxTokens ?? 0],
    );
    // The row lock serialises concurrent leases from every replica: each reads what is left after the previous grant.
    return inTransaction(this.db, async (c) => {
      const { rows } = await c.query<{ requests_left: string; tokens_left: string }>(
        'SELECT requests_left, tokens_left FROM gateway_limit_windows WHERE tenant_id = $1 AND subject = $2 AND window_start = $3 FOR UPDATE',
        [w.tenantId, w.subject, start],
      );
      const left = rows[0];
      const granted = {
        requests: Math.min(Math.max(Number(left?.requests_left ?? 0), 0), want.requests),
        tokens: Math.min(Math.max(Number(left?.tokens_left ?? 0), 0), want.tokens),
      };
      if (granted.requests > 0 || granted.tokens > 0) {
        await c.query(
          `UPDATE gateway_limit_windows SET requests_left = requests_left - $4, tokens_left = tokens_left - $5
           WHERE tenant_id = $1 AND subject = $2 AND window_start = $3`,
          [w.tenantId, w.subject, start, granted.requests, granted.tokens],
        );
      }
      return granted;
    });
  }

  /** Gives back unused allowance (positive) or charges usage beyond what was leased (negative tokens). */
  async adjust(w: WindowRef, delta: { requests: number; tokens: number }): Promise<void> {
    await this.db.query(
      `UPDATE gateway_limit_windows SET requests_left = requests_left + $4, tokens_left = tokens_left + $5
       WHERE tenant_id = $1 AND subject = $2 AND window_start = $3`,
      [w.tenantId, w.subject, new Date(w.windowStart), delta.requests, delta.tokens],
    );
  }

  /**
   * Deletes windows that ended before `endedBeforeMs` (epoch ms): a window's length comes from its rule (a budget's is
   * its calendar month), and a window whose rule was removed counts as ended at its start. Replicas only lease from current windows, so a
   * late give-back or charge to a deleted window changes nothing that is still counted.
   */
  async pruneEndedWindows(endedBeforeMs: number): Promise<number> {
    const { rowCount } = await this.db.query(
      `DELETE FROM gateway_limit_windows w
       WHERE w.window_start < to_timestamp($1 / 1000.0)
         AND CASE WHEN w.subject = 'budget' OR w.subject LIKE 'budget:%'
               THEN (w.window_start AT TIME ZONE 'UTC' + interval '1 month') AT TIME ZONE 'UTC'
               ELSE w.window_start + make_interval(secs => COALESCE(
                 (SELECT l.window_seconds FROM gateway_limits l WHERE l.tenant_id = w.tenant_id AND l.subject = w.subject), 0))
             END < to_timestamp($1 / 1000.0)`,
      [endedBeforeMs],
    );
    return rowCount ?? 0;
  }

  async remaining(w: WindowRef): Promise<{ requests: number; tokens: number } | undefined> {
    const { rows } = await this.db.query<{ requests_left: string; tokens_left: string }>(
      'SELECT requests_left, tokens_left FROM gateway_limit_windows WHERE tenant_id = $1 AND subject = $2 AND window_start = $3',
      [w.tenantId, w.subject, new Date(w.windowStart)],
    );
    return rows[0] ? { requests: Number(rows[0].requests_left), tokens: Number(rows[0].tokens_left) } : undefined;
  }
}
