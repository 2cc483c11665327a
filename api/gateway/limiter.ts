import type { Logger } from '../../common/logger';
import type { LimitRule, LimitStore, WindowRef } from '../../common/store/limits';

/** What this replica holds of one limit's current window. */
interface WindowState {
  ref: WindowRef;
  rule: LimitRule;
  endsAt: number;
  reqLeased: number;
  reqUsed: number;
  tokLeased: number;
  /** Reserved by requests in flight (prompt estimate + max_tokens). */
  tokReserved: number;
  /** Settled real usage; may pass tokLeased when a request used more than it reserved (the debt is leased next). */
  tokSpent: number;
  lastUsed: number;
  /** The store had nothing left; do not ask again before this time. */
  dryUntil: number;
  leasing?: Promise<void>;
}

export interface Reservation {
  /** Records the request's real token usage (0 when it failed) and frees its reservation. */
  settle(actualTokens: number): void;
}

export type Admission = { ok: true; reservation: Reservation } | { ok: false; retryAfterSeconds: number; reason: string };

/** A dry limit is asked again after this long, in case another replica gave back its unused slice. */
const DRY_RECHECK_MS = 1_000;

/**
 * Request and token limits that hold across replicas. Each replica leases slices of a window's allowance from
 * PostgreSQL (atomic UPDATE … RETURNING), admits requests from its slices in memory, reserves a request's
 * prompt tokens + max_tokens before the upstream call and settles the real usage after. So all replicas
 * together never admit more than the limit, except usage beyond a reservation (charged as debt), and a
 * replica's unused slice is handed back after `leaseIdleMs` or at shutdown.
 */
export class SliceLimiter {
  private readonly windows = new Map<string, WindowState>();
  private readonly sweeper: NodeJS.Timeout;

  constructor(
    private readonly store: LimitStore,
    private readonly opts: { requestSlice: number; tokenSlice: number; leaseIdleMs: number; logger: Pick<Logger, 'warn' | 'error'> },
  ) {
    this.sweeper = setInterval(() => void this.returnIdle(false), Math.max(10, opts.leaseIdleMs / 2));
    this.sweeper.unref();
  }

  async admit(rules: LimitRule[], tokens: number): Promise<Admission> {
    const taken: WindowState[] = [];
    const undo = () => taken.forEach((w) => ((w.reqUsed -= 1), (w.tokReserved -= tokens)));
    for (const rule of rules) {
      const w = this.window(rule);
      const ok = await this.take(w, tokens);
      if (!ok) {
        undo();
        const what = rule.subject ? `API key ${rule.subject}` : `tenant '${rule.tenantId}'`;
        return { ok: false, retryAfterSeconds: Math.max(1, Math.ceil((w.endsAt - Date.now()) / 1000)), reason: `${what} is over its limit of ${limitText(rule)}` };
      }
      taken.push(w);
    }
    let settled = false;
    return {
      ok: true,
      reservation: {
        settle: (actual) => {
          if (settled) return;
          settled = true;
          for (const w of taken) {
            w.tokReserved -= tokens;
            w.tokSpent += actual;
            w.lastUsed = Date.now();
          }
        },
      },
    };
  }

  private window(rule: LimitRule): WindowState {
    const key = `${rule.tenantId}\0${rule.subject}`;
    const now = Date.now();
    const span = rule.windowSeconds * 1000;
    const start = Math.floor(now / span) * span;
    let w = this.windows.get(key);
    if (w && w.ref.windowStart === start) {
      // Routes and limits are re-read often; a changed rule applies to the window in progress, counts kept.
      w.rule = rule;
      return w;
    }
    // A closed window's leftovers lapse with it.
    w = {
      ref: { tenantId: rule.tenantId, subject: rule.subject, windowStart: start },
      rule,
      endsAt: start + span,
      reqLeased: 0,
      reqUsed: 0,
      tokLeased: 0,
      tokReserved: 0,
      tokSpent: 0,
      lastUsed: now,
      dryUntil: 0,
    };
    this.windows.set(key, w);
    return w;
  }

  /**
   * Takes one request and `tokens` from what the replica holds of the window, leasing more when that is short.
   * The check and the take happen in one synchronous step, so concurrent requests can never both take the last unit.
   */
  private async take(w: WindowState, tokens: number): Promise<boolean> {
    for (;;) {
      // Both dimensions are counted; only a limited one is checked and leased.
      const needReq = w.rule.maxRequests === null ? 0 : w.reqUsed + 1 - w.reqLeased;
      const needTok = w.rule.maxTokens === null ? 0 : w.tokReserved + w.tokSpent + tokens - w.tokLeased;
      if (needReq <= 0 && needTok <= 0) {
        w.reqUsed += 1;
        w.tokReserved += tokens;
        w.lastUsed = Date.now();
        return true;
      }
      if (w.leasing) {
        await w.leasing;
        continue;
      }
      if (Date.now() < w.dryUntil) return false;
      const want = {
        requests: needReq > 0 ? Math.max(needReq, this.opts.requestSlice) : 0,
        tokens: needTok > 0 ? Math.max(needTok, this.opts.tokenSlice) : 0,
      };
      w.leasing = this.store.lease(w.rule, w.ref, want).then(
        (got) => {
          w.reqLeased += got.requests;
          w.tokLeased += got.tokens;
          if (got.requests < want.requests || got.tokens < want.tokens) w.dryUntil = Math.min(w.endsAt, Date.now() + DRY_RECHECK_MS);
        },
        (err) => {
          // Without the store no replica can prove it is within the limit; refuse rather than overspend.
          this.opts.logger.error({ err }, 'leasing a limit slice failed');
          w.dryUntil = Date.now() + DRY_RECHECK_MS;
        },
      );
      try {
        await w.leasing;
      } finally {
        w.leasing = undefined;
      }
    }
  }

  /** Hands back unused allowance (and charges debt) of idle windows, or of all windows at shutdown. */
  async returnIdle(all: boolean): Promise<void> {
    const now = Date.now();
    const jobs: Promise<void>[] = [];
    for (const [key, w] of this.windows) {
      if (now >= w.endsAt) {
        if (w.tokReserved === 0) this.windows.delete(key);
        continue;
      }
      if (!all && (now - w.lastUsed < this.opts.leaseIdleMs || w.leasing)) continue;
      const requests = w.rule.maxRequests === null ? 0 : Math.max(0, w.reqLeased - w.reqUsed);
      const tokens = w.rule.maxTokens === null ? 0 : w.tokLeased - w.tokReserved - w.tokSpent;
      if (requests === 0 && tokens === 0) continue;
      w.reqLeased -= requests;
      w.tokLeased -= tokens;
      jobs.push(
        this.store.adjust(w.ref, { requests, tokens }).catch((err) => {
          w.reqLeased += requests;
          w.tokLeased += tokens;
          this.opts.logger.warn({ err }, 'returning an unused limit slice failed; it lapses with its window');
        }),
      );
    }
    await Promise.all(jobs);
  }

  async close(): Promise<void> {
    clearInterval(this.sweeper);
    await this.returnIdle(true);
  }
}

const limitText = (r: LimitRule): string =>
  [r.maxRequests !== null ? `${r.maxRequests} requests` : '', r.maxTokens !== null ? `${r.maxTokens} tokens` : ''].filter(Boolean).join(' and ') +
  ` per ${r.windowSeconds} s`;
