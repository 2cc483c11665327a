import type { Pool, PoolClient } from 'pg';
import { budgetSubject, monthOf, type LimitRule } from './limits';
import { cursorTime, KeyPart, keysetPage, type Keyset, type Page, type PageQuery } from './pages';
import { inTransaction } from './pool';
import type { CredentialVault, SealedCredential } from '../credentials';
import { PRICED_USAGE } from './prices';

/** Percent of a budget at which an alert is sent when a budget names none. */
export const DEFAULT_THRESHOLDS = [50, 80, 100];

export interface BudgetSpec {
  /** Per calendar month (UTC), in `currency`. */
  amount: number;
  currency: string;
  /** Percent of the amount, ascending. */
  thresholds: number[];
  webhookUrl: string | null;
  /** The HMAC key of the alerts (with a webhookUrl), sealed under webhookSecretContext. */
  webhookSecret: SealedCredential | null;
}

export interface Budget {
  /** '' for the whole tenant. */
  projectId: string;
  amount: number;
  currency: string;
  thresholds: number[];
  webhookUrl: string | null;
  webhookSecretSet: boolean;
  /** The metered cost in `currency` so far this month. */
  spent: number;
  period: string;
  updatedAt: string;
}

export interface BudgetAlert {
  id: string;
  tenantId: string;
  projectId: string;
  /** YYYY-MM */
  period: string;
  threshold: number;
  spent: number;
  amount: number;
  currency: string;
  createdAt: string;
  attempts: number;
  deliveredAt: string | null;
  abandonedAt: string | null;
  lastError: string | null;
}

/** An alert handed to a sender, with where and how to send it. */
export interface DueAlert extends BudgetAlert {
  webhookUrl: string | null;
  webhookSecret: SealedCredential | null;
}

/** Binds a budget's sealed webhook secret to its budget (associated data), so it opens nowhere else. */
export const webhookSecretContext = (tenantId: string, projectId: string): string =>
  `budget-webhook:${tenantId}:${projectId}`;

export const BUDGET_KEYS: Keyset<Budget> = { list: 'budgets', parts: [KeyPart.text], keyOf: (b) => [b.projectId] };
export const ALERT_KEYS: Keyset<BudgetAlert> = {
  list: 'budget-alerts',
  parts: [KeyPart.time, KeyPart.text],
  keyOf: (a) => [a.createdAt, a.id],
};

/** Micro-units of a currency amount: what the gateway's budget windows count. */
export const toMicros = (amount: number): number => Math.round(amount * 1e6);

/** The cost in budget `b`'s currency metered for its scope between $2 and $3 (timestamptz). */
const SPENT = `COALESCE((SELECT sum(c.cost) FROM (${PRICED_USAGE}
    WHERE u.tenant_id = b.tenant_id AND (b.project_id = '' OR u.project_id = b.project_id)
      AND u.minute >= $2 AND u.minute < $3) c WHERE c.currency = b.currency), 0)`;

interface BudgetRow {
  project_id: string;
  amount: string;
  currency: string;
  thresholds: number[];
  webhook_url: string | null;
  secret_set: boolean;
  spent: string;
  updated_at: Date;
}
const budgetOf = (r: BudgetRow, period: string): Budget => ({
  projectId: r.project_id,
  amount: Number(r.amount),
  currency: r.currency,
  thresholds: r.thresholds,
  webhookUrl: r.webhook_url,
  webhookSecretSet: r.secret_set,
  spent: Number(r.spent),
  period,
  updatedAt: r.updated_at.toISOString(),
});

interface AlertRow {
  id: string;
  tenant_id: string;
  project_id: string;
  period: string;
  threshold: number;
  spent: string;
  amount: string;
  currency: string;
  created_at: string;
  attempts: number;
  delivered_at: Date | null;
  abandoned_at: Date | null;
  last_error: string | null;
}
const ALERT_COLUMNS = `a.id, a.tenant_id, a.project_id, to_char(a.period, 'YYYY-MM') AS period, a.threshold, a.spent, a.amount,
  a.currency, ${cursorTime('a.created_at')} AS created_at, a.attempts, a.delivered_at, a.abandoned_at, a.last_error`;
const alertOf = (r: AlertRow): BudgetAlert => ({
  id: r.id,
  tenantId: r.tenant_id,
  projectId: r.project_id,
  period: r.period,
  threshold: r.threshold,
  spent: Number(r.spent),
  amount: Number(r.amount),
  currency: r.currency,
  createdAt: r.created_at,
  attempts: r.attempts,
  deliveredAt: r.delivered_at?.toISOString() ?? null,
  abandonedAt: r.abandoned_at?.toISOString() ?? null,
  lastError: r.last_error,
});

const periodOf = (monthStart: number) => new Date(monthStart).toISOString().slice(0, 7);

/**
 * Monthly budgets of tenants and projects, and their alerts. The gateway enforces a budget as a limit whose window is
 * the month and whose unit is a micro-unit of the budget's currency (api/gateway/limiter.ts); its window row in
 * gateway_limit_windows holds what is left of the month's amount.
 */
export class BudgetStore {
  constructor(private readonly db: Pool) {}

  /**
   * Sets a budget. Its window of this month keeps what was spent: a changed amount moves what is left by the
   * difference; a new budget (or one in another currency) starts from the amount less the cost metered this month.
   */
  async setBudget(tenantId: string, projectId: string, spec: BudgetSpec, now = Date.now()): Promise<Budget> {
    const month = monthOf(now);
    const subject = budgetSubject(projectId);
    await inTransaction(this.db, async (c) => {
      const { rows: old } = await c.query<{ amount: string; currency: string }>(
        'SELECT amount, currency FROM budgets WHERE tenant_id = $1 AND project_id = $2 FOR UPDATE',
        [tenantId, projectId],
      );
      await c.query(
        `INSERT INTO budgets (tenant_id, project_id, amount, currency, thresholds, webhook_url, webhook_secret)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (tenant_id, project_id) DO UPDATE SET amount = EXCLUDED.amount, currency = EXCLUDED.currency,
           thresholds = EXCLUDED.thresholds, webhook_url = EXCLUDED.webhook_url, webhook_secret = EXCLUDED.webhook_secret,
           updated_at = now()`,
        [
          tenantId,
          projectId,
          spec.amount,
          spec.currency,
          spec.thresholds,
          spec.webhookUrl,
          spec.webhookSecret && JSON.stringify(spec.webhookSecret),
        ],
      );
      const window = [tenantId, subject, new Date(month.start)];
      const prior = old[0];
      if (prior && prior.currency === spec.currency) {
        await c.query(
          `UPDATE gateway_limit_windows SET tokens_left = tokens_left + $4
           WHERE tenant_id = $1 AND subject = $2 AND window_start = $3`,
          [...window, toMicros(spec.amount) - toMicros(Number(prior.amount))],
        );
        return;
      }
      await c.query(
        'DELETE FROM gateway_limit_windows WHERE tenant_id = $1 AND subject = $2 AND window_start = $3',
        window,
      );
      await c.query(
        `INSERT INTO gateway_limit_windows (tenant_id, subject, window_start, requests_left, tokens_left)
         SELECT $1, $4, $2, 0, $5 - ceil(${SPENT} * 1000000)::bigint
         FROM budgets b WHERE b.tenant_id = $1 AND b.project_id = $6`,
        [tenantId, new Date(month.start), new Date(month.end), subject, toMicros(spec.amount), projectId],
      );
    });
    return (await this.getBudget(tenantId, projectId, now))!;
  }

  async getBudget(tenantId: string, projectId: string, now = Date.now()): Promise<Budget | undefined> {
    return (await this.budgets(tenantId, 'AND b.project_id = $4', [projectId], now))[0];
  }

  /** A page of the tenant's budgets by project; the whole tenant's ('') first. */
  async listBudgets(tenantId: string, q: PageQuery, now = Date.now()): Promise<Page<Budget>> {
    return keysetPage(BUDGET_KEYS, q, (after, take) =>
      this.budgets(
        tenantId,
        'AND ($4::text IS NULL OR b.project_id > $4) ORDER BY b.project_id LIMIT $5',
        [after?.[0] ?? null, take],
        now,
      ),
    );
  }

  private async budgets(tenantId: string, where: string, params: unknown[], now: number): Promise<Budget[]> {
    const month = monthOf(now);
    const { rows } = await this.db.query<BudgetRow>(
      `SELECT b.project_id, b.amount, b.currency, b.thresholds, b.webhook_url, b.webhook_secret IS NOT NULL AS secret_set,
         b.updated_at, ${SPENT} AS spent
       FROM budgets b WHERE b.tenant_id = $1 ${where}`,
      [tenantId, new Date(month.start), new Date(month.end), ...params],
    );
    return rows.map((r) => budgetOf(r, periodOf(month.start)));
  }

  /** Removes a budget and its window; false when there was none. */
  async removeBudget(tenantId: string, projectId: string): Promise<boolean> {
    return inTransaction(this.db, async (c) => {
      const { rowCount } = await c.query('DELETE FROM budgets WHERE tenant_id = $1 AND project_id = $2', [
        tenantId,
        projectId,
      ]);
      await c.query('DELETE FROM gateway_limit_windows WHERE tenant_id = $1 AND subject = $2', [
        tenantId,
        budgetSubject(projectId),
      ]);
      return rowCount === 1;
    });
  }

  /** Every budget as a limit rule, for a gateway replica's snapshot. */
  async rules(q: Pick<PoolClient, 'query'> = this.db): Promise<(LimitRule & { projectId: string })[]> {
    const { rows } = await q.query<{ tenant_id: string; project_id: string; micros: string; currency: string }>(
      'SELECT tenant_id, project_id, (amount * 1000000)::bigint AS micros, currency FROM budgets',
    );
    return rows.map((r) => ({
      tenantId: r.tenant_id,
      projectId: r.project_id,
      subject: budgetSubject(r.project_id),
      windowSeconds: 31 * 86_400,
      maxRequests: null,
      maxTokens: Number(r.micros),
      currency: r.currency,
    }));
  }

  /**
   * Records an alert for each threshold the cost metered this month has reached, of these tenants' budgets. The
   * unique key (tenant, project, month, threshold) makes this idempotent: however many gateway processes decide at
   * once, each alert is one row, with one id. Answers how many alerts are new.
   */
  async decideAlerts(tenantIds: string[], now = Date.now()): Promise<number> {
    const month = monthOf(now);
    const { rowCount } = await this.db.query(
      `INSERT INTO budget_alerts (id, tenant_id, project_id, period, threshold, spent, amount, currency)
       SELECT gen_random_uuid(), s.tenant_id, s.project_id, ($2::timestamptz AT TIME ZONE 'UTC')::date, t.threshold,
              s.spent, s.amount, s.currency
       FROM (SELECT b.tenant_id, b.project_id, b.amount, b.currency, b.thresholds, ${SPENT} AS spent
             FROM budgets b WHERE b.tenant_id = ANY($1)
               -- A budget whose every threshold has its alert this month is not summed again.
               AND EXISTS (SELECT FROM unnest(b.thresholds) AS t(threshold) WHERE NOT EXISTS (
                 SELECT FROM budget_alerts a WHERE a.tenant_id = b.tenant_id AND a.project_id = b.project_id
                   AND a.period = ($2::timestamptz AT TIME ZONE 'UTC')::date AND a.threshold = t.threshold))) s
       CROSS JOIN LATERAL unnest(s.thresholds) AS t(threshold)
       WHERE s.spent * 100 >= s.amount * t.threshold
       ON CONFLICT (tenant_id, project_id, period, threshold) DO NOTHING`,
      [tenantIds, new Date(month.start), new Date(month.end)],
    );
    return rowCount ?? 0;
  }

  /**
   * Takes up to `limit` alerts due for delivery and holds them for `holdMs` (their next attempt is pushed back, so
   * another process does not send them meanwhile; a sender that dies before it answers leaves them due again after).
   */
  async claimDue(limit: number, holdMs: number): Promise<DueAlert[]> {
    const { rows } = await this.db.query<
      AlertRow & { webhook_url: string | null; webhook_secret: SealedCredential | null }
    >(
      `WITH due AS (
         SELECT id FROM budget_alerts
         WHERE delivered_at IS NULL AND abandoned_at IS NULL AND next_attempt_at <= now()
         ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED),
       claimed AS (
         UPDATE budget_alerts a SET attempts = a.attempts + 1, next_attempt_at = now() + make_interval(secs => $2 / 1000.0)
         FROM due WHERE a.id = due.id RETURNING a.*)
       SELECT ${ALERT_COLUMNS}, b.webhook_url, b.webhook_secret
       FROM claimed a LEFT JOIN budgets b ON b.tenant_id = a.tenant_id AND b.project_id = a.project_id`,
      [limit, holdMs],
    );
    return rows.map((r) => ({ ...alertOf(r), webhookUrl: r.webhook_url, webhookSecret: r.webhook_secret }));
  }

  async delivered(id: string): Promise<void> {
    await this.db.query('UPDATE budget_alerts SET delivered_at = now(), last_error = NULL WHERE id = $1', [id]);
  }

  /** A failed attempt: retried at `retryAt`, or given up when it is null. */
  async failed(id: string, error: string, retryAt: Date | null): Promise<void> {
    await this.db.query(
      `UPDATE budget_alerts SET last_error = $2,
         next_attempt_at = COALESCE($3, next_attempt_at), abandoned_at = CASE WHEN $3::timestamptz IS NULL THEN now() END
       WHERE id = $1`,
      [id, error.slice(0, 1000), retryAt],
    );
  }

  /** Re-wraps the webhook secrets not under the vault's primary KEK (key rotation), as ProviderStore.rewrapAll. */
  async rewrapSecrets(vault: CredentialVault): Promise<{ rewrapped: number; stranded: number }> {
    const { rows } = await this.db.query<{ tenant_id: string; project_id: string; webhook_secret: SealedCredential }>(
      'SELECT tenant_id, project_id, webhook_secret FROM budgets WHERE webhook_secret IS NOT NULL',
    );
    return vault.rewrapEach(
      rows,
      (r) => r.webhook_secret,
      async (r, next) => {
        const { rowCount } = await this.db.query(
          `UPDATE budgets SET webhook_secret = $3 WHERE tenant_id = $1 AND project_id = $2 AND webhook_secret = $4`,
          [r.tenant_id, r.project_id, JSON.stringify(next), JSON.stringify(r.webhook_secret)],
        );
        return rowCount === 1;
      },
    );
  }

  /** A page of the tenant's alerts, oldest first. */
  async listAlerts(tenantId: string, q: PageQuery): Promise<Page<BudgetAlert>> {
    return keysetPage(ALERT_KEYS, q, async (after, take) => {
      const { rows } = await this.db.query<AlertRow>(
        `SELECT ${ALERT_COLUMNS} FROM budget_alerts a
         WHERE a.tenant_id = $1 AND ($2::text IS NULL OR (${cursorTime('a.created_at')}, a.id::text) > ($2, $3))
         ORDER BY a.created_at, a.id LIMIT $4`,
        [tenantId, after?.[0] ?? null, after?.[1] ?? null, take],
      );
      return rows.map(alertOf);
    });
  }
}
