import { createHmac } from 'node:crypto';
import { egressRefusalIn, type EgressPolicy } from '../../common/egress';
import type { Logger } from '../../common/logger';
import { webhookSecretContext, type BudgetStore, type DueAlert } from '../../common/store/budgets';
import { CredentialUnavailableError, type CredentialVault } from '../../common/credentials';

/** Alerts taken per query. */
const BATCH = 20;
/** A webhook that has not answered by then has failed this attempt. */
const SEND_TIMEOUT_MS = 10_000;
/** A claimed alert is not handed to another process for this long: longer than one attempt can take. */
const HOLD_MS = 3 * SEND_TIMEOUT_MS;
const MAX_ATTEMPTS = 12;
const MAX_BACKOFF_MS = 3_600_000;

/** The JSON a budget webhook receives; the same bytes on every attempt, so a receiver can dedupe on `id`. */
export function alertEvent(a: DueAlert) {
  return {
    id: a.id,
    type: 'budget.threshold_reached',
    createdAt: a.createdAt,
    tenantId: a.tenantId,
    projectId: a.projectId || null,
    period: a.period,
    thresholdPercent: a.threshold,
    amount: a.amount,
    spent: a.spent,
    currency: a.currency,
  };
}

/** `X-LLMHub-Signature`: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" under the budget's webhook secret>`. */
export const alertSignature = (secret: string, unixSeconds: number, body: string): string =>
  `t=${unixSeconds},v1=${createHmac('sha256', secret).update(`${unixSeconds}.${body}`).digest('hex')}`;

/**
 * Delivers budget alerts from their outbox rows (budget_alerts), at least once and with the alert's id on every attempt:
 * an alert is claimed with SKIP LOCKED, so several processes share the work, and is marked delivered only after a 2xx;
 * a failure (or a process that died mid-send) leaves it due again later, with exponential backoff. Webhook URLs are
 * the tenant's, so every connection goes through the egress check.
 */
export class BudgetAlertSender {
  private readonly timer: NodeJS.Timeout;
  private running: Promise<void> | undefined;
  private again = false;

  constructor(
    private readonly deps: {
      store: Pick<BudgetStore, 'claimDue' | 'delivered' | 'failed'>;
      /** Opens the sealed webhook secrets; none in a process without a KEK, whose sends fail and are retried. */
      vault?: Pick<CredentialVault, 'open'>;
      egress: Pick<EgressPolicy, 'fetch'>;
      pollMs: number;
      retryMs: number;
      logger: Pick<Logger, 'warn'>;
    },
  ) {
    this.timer = setInterval(() => this.wake(), deps.pollMs);
    this.timer.unref();
  }

  /** Sends what is due now; a call while sending runs one more round after it. */
  wake(): void {
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = (async () => {
      try {
        do {
          this.again = false;
          for (;;) {
            const due = await this.deps.store.claimDue(BATCH, HOLD_MS);
            if (due.length === 0) break;
            await Promise.all(due.map((a) => this.send(a)));
          }
        } while (this.again);
      } catch (err) {
        this.deps.logger.warn({ err }, 'budget alert delivery failed; will retry');
      } finally {
        this.running = undefined;
      }
    })();
  }

  private async send(a: DueAlert): Promise<void> {
    if (!a.webhookUrl || !a.webhookSecret) {
      await this.deps.store.failed(a.id, 'the budget has no webhook (or no longer exists)', null);
      return;
    }
    const body = JSON.stringify(alertEvent(a));
    let error: string;
    try {
      // Opened per attempt, never kept: the secret lives in memory only while this alert is signed.
      if (!this.deps.vault)
        throw new CredentialUnavailableError('this process has no key-encryption key (LLMHUB_KEK_FILE)');
      const secret = await this.deps.vault.open(a.webhookSecret, webhookSecretContext(a.tenantId, a.projectId));
      const res = await this.deps.egress.fetch(a.webhookUrl, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'x-llmhub-event-id': a.id,
          'x-llmhub-signature': alertSignature(secret, Math.floor(Date.now() / 1000), body),
        },
        body,
        redirect: 'manual',
        signal: AbortSignal.timeout(SEND_TIMEOUT_MS),
      });
      await res.body?.cancel();
      if (res.status >= 200 && res.status < 300) {
        await this.deps.store.delivered(a.id);
        return;
      }
      error = `the webhook answered ${res.status}`;
    } catch (err) {
      // A secret that does not open (its KEK gone, or none here) is retried: the key may come back or be elsewhere.
      // The refusal names only the host; other errors are the connection's (fetch's code of its cause), never the secret's.
      const code = ((err as Error).cause as { code?: unknown } | undefined)?.code;
      error =
        err instanceof CredentialUnavailableError
          ? `the webhook secret does not open: ${err.message}`
          : (egressRefusalIn(err)?.message ??
            `the webhook could not be reached: ${(err as Error).message}${typeof code === 'string' ? ` (${code})` : ''}`);
    }
    const retryAt =
      a.attempts >= MAX_ATTEMPTS
        ? null
        : new Date(Date.now() + Math.min(this.deps.retryMs * 2 ** (a.attempts - 1), MAX_BACKOFF_MS));
    await this.deps.store.failed(a.id, error, retryAt);
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.running;
  }
}
