import type { Logger } from '../../common/logger';
import { CEILING_SUBJECT, monthOf, type LimitRule, type LimitStore, type WindowRef } from '../../common/store/limits';

/** What this replica holds of one limit's current window. */
interface WindowState {
  ref: WindowRef;
  rule: LimitRule;
  endsAt: number;
  reqLeased: number;
  reqUsed: number;
  tokLeased: number;
  /** Reserved by requests in flight (prompt estimate + max_tokens; their cost in micro-units for a budget). */
  tokReserved: number;
  /** Settled real usage; may pass tokLeased when a request used more than it reserved (the debt is leased next). */
  tokSpent: number;
  lastUsed: number;
  /** The store had nothing left; do not ask again before this time. */
  dryUntil: number;
  /** Slice sizes for the next lease: the configured ones, grown while the window is hot. */
  reqSlice: number;
  tokSlice: number;
  lastLeaseAt: number;
  leasing?: Promise<void>;
}

export interface Reservation {
  /**
   * Records the request's real token usage (0 when it failed) and its cost in micro-units of the reserved cost's
   * currency, and frees its reservation.
   */
  settle(actualTokens: number, actualCostMicros?: number): void;
}

/** What a request may cost, in whole micro-units (rounded up) of its price's currency; budgets count it. */
export interface Cost {
  currency: string;
  micros: number;
}

/** Which limit refused a request: the platform's ceiling on the tenant, the tenant's own, one API key's, or a budget. */
export type LimitScope = 'ceiling' | 'tenant' | 'key' | 'budget';

export type Admission =
  { ok: true; reservation: Reservation } | { ok: false; retryAfterSeconds: number; reason: string; scope: LimitScope };

/** A dry limit is asked again after this long, in case another replica gave back its unused slice. */
const DRY_RECHECK_MS = 1_000;
/** A window that needs another lease this soon after the last one is hot: its slices grow. */
const HOT_MS = 1_000;
/** A grown slice stays at most this share of the limit, which bounds what an idle replica can sit on. */
const MAX_SLICE_SHARE = 1 / 16;

/**
 * Request and token limits that hold across replicas. Each replica leases slices of a window's allowance from
 * PostgreSQL (atomic UPDATE … RETURNING), admits requests from its slices in memory, reserves a request's
 * prompt tokens + max_tokens before the upstream call and settles the real usage after. So all replicas
 * together never admit more than the limit, except usage beyond a reservation (charged as debt), and a
 * replica's unused slice is handed back after `leaseIdleMs` or at shutdown. A busy window would otherwise go to
 * the store every `requestSlice` requests and make them wait on it: its slices double while it keeps leasing within
 * a second (up to a sixteenth of the limit) and the next one is leased before the current one runs out.
 */
export class SliceLimiter {
  private readonly windows = new Map<string, WindowState>();
  private readonly sweeper: NodeJS.Timeout;

  constructor(
    private readonly store: Pick<LimitStore, 'lease' | 'adjust'>,
    private readonly opts: {
      requestSlice: number;
      tokenSlice: number;
      /** A budget's first slice, in micro-units of its currency. */
      budgetSlice: number;
      leaseIdleMs: number;
      logger: Pick<Logger, 'warn' | 'error'>;
    },
  ) {
    this.sweeper = setInterval(() => void this.returnIdle(false), Math.max(10, opts.leaseIdleMs / 2));
    this.sweeper.unref();
  }

  /**
   * Synchronous while this replica's slices cover the request, which is the common case: only a request that
   * has to wait for a lease gets a promise.
   */
  admit(rules: LimitRule[], tokens: number, cost?: Cost): Admission | Promise<Admission> {
    const taken: WindowState[] = [];
    for (let i = 0; i < rules.length; i++) {
      const w = this.window(rules[i]!);
      if (!this.tryTake(w, amountOf(w.rule, tokens, cost))) return this.admitLeasing(rules, i, tokens, cost, taken);
      taken.push(w);
    }
    return { ok: true, reservation: new SliceReservation(taken, tokens, cost) };
  }

  private async admitLeasing(
    rules: LimitRule[],
    from: number,
    tokens: number,
    cost: Cost | undefined,
    taken: WindowState[],
  ): Promise<Admission> {
    for (let i = from; i < rules.length; i++) {
      const rule = rules[i]!;
      const w = this.window(rule);
      if (!(await this.take(w, amountOf(rule, tokens, cost)))) {
        for (const t of taken) {
          t.reqUsed -= 1;
          t.tokReserved -= amountOf(t.rule, tokens, cost);
        }
        return {
          ok: false,
          retryAfterSeconds: Math.max(1, Math.ceil((w.endsAt - Date.now()) / 1000)),
          reason: refusal(rule),
          scope: rule.currency
            ? 'budget'
            : rule.subject === CEILING_SUBJECT
              ? 'ceiling'
              : rule.subject
                ? 'key'
                : 'tenant',
        };
      }
      taken.push(w);
    }
    return { ok: true, reservation: new SliceReservation(taken, tokens, cost) };
  }

  /** The configured first slice of a rule's token dimension (micro-units for a budget). */
  private tokenFloor(rule: LimitRule): number {
    return rule.currency ? this.opts.budgetSlice : this.opts.tokenSlice;
  }

  private window(rule: LimitRule): WindowState {
    const key = `${rule.tenantId}\0${rule.subject}`;
    const now = Date.now();
    let start: number;
    let endsAt: number;
    if (rule.currency) ({ start, end: endsAt } = monthOf(now));
    else {
      const span = rule.windowSeconds * 1000;
      start = Math.floor(now / span) * span;
      endsAt = start + span;
    }
    let w = this.windows.get(key);
    if (w && w.ref.windowStart === start) {
      // Routes and limits are re-read often; a changed rule applies to the window in progress, counts kept.
      w.rule = rule;
      return w;
    }
    // A closed window's leftovers lapse with it. Its slice sizes carry over while it was in use: a busy key would
    // otherwise start every window at the configured slice and its first requests would wait on lease after lease
    // while the slices doubled back up.
    const carried = w !== undefined && now - w.lastUsed < this.opts.leaseIdleMs ? w : undefined;
    w = {
      ref: { tenantId: rule.tenantId, subject: rule.subject, windowStart: start },
      rule,
      endsAt,
      reqLeased: 0,
      reqUsed: 0,
      tokLeased: 0,
      tokReserved: 0,
      tokSpent: 0,
      lastUsed: now,
      dryUntil: 0,
      reqSlice: carried
        ? grownSlice(carried.reqSlice, this.opts.requestSlice, rule.maxRequests)
        : this.opts.requestSlice,
      tokSlice: carried ? grownSlice(carried.tokSlice, this.tokenFloor(rule), rule.maxTokens) : this.tokenFloor(rule),
      lastLeaseAt: 0,
    };
    this.windows.set(key, w);
    return w;
  }

  /**
   * Takes one request and `tokens` from what the replica holds of the window, if that suffices. The check and the
   * take happen in one synchronous step, so concurrent requests can never both take the last unit.
   */
  private tryTake(w: WindowState, tokens: number): boolean {
    // Both dimensions are counted; only a limited one is checked and leased.
    const reqFree = w.rule.maxRequests === null ? Infinity : w.reqLeased - w.reqUsed - 1;
    const tokFree = w.rule.maxTokens === null ? Infinity : w.tokLeased - w.tokReserved - w.tokSpent - tokens;
    if (reqFree < 0 || tokFree < 0) return false;
    w.reqUsed += 1;
    w.tokReserved += tokens;
    const now = Date.now();
    w.lastUsed = now;
    // A hot window leases its next slice before this one runs out, so its requests do not wait on the store.
    const reqLow = w.reqSlice > this.opts.requestSlice && reqFree < w.reqSlice / 2;
    const tokLow = w.tokSlice > this.tokenFloor(w.rule) && tokFree < w.tokSlice / 2;
    if ((reqLow || tokLow) && !w.leasing && now >= w.dryUntil) {
      void this.lease(w, { requests: reqLow ? w.reqSlice : 0, tokens: tokLow ? w.tokSlice : 0 });
    }
    return true;
  }

  /** tryTake, leasing more (and waiting for it) while the replica's slice is short. */
  private async take(w: WindowState, tokens: number): Promise<boolean> {
    for (;;) {
      if (this.tryTake(w, tokens)) return true;
      if (w.leasing) {
        await w.leasing;
        continue;
      }
      if (Date.now() < w.dryUntil) return false;
      const needReq = w.rule.maxRequests === null ? 0 : w.reqUsed + 1 - w.reqLeased;
      const needTok = w.rule.maxTokens === null ? 0 : w.tokReserved + w.tokSpent + tokens - w.tokLeased;
      await this.lease(w, { requests: needReq > 0 ? needReq : 0, tokens: needTok > 0 ? needTok : 0 });
    }
  }

  /** Leases at least `need` of each dimension, rounded up to the window's slice (a dimension with no need is left alone). */
  private lease(w: WindowState, need: { requests: number; tokens: number }): Promise<void> {
    const now = Date.now();
    if (now - w.lastLeaseAt < HOT_MS) {
      w.reqSlice = grownSlice(w.reqSlice * 2, w.reqSlice, w.rule.maxRequests);
      w.tokSlice = grownSlice(w.tokSlice * 2, w.tokSlice, w.rule.maxTokens);
    }
    w.lastLeaseAt = now;
    const want = {
      requests: need.requests > 0 ? Math.max(need.requests, w.reqSlice) : 0,
      tokens: need.tokens > 0 ? Math.max(need.tokens, w.tokSlice) : 0,
    };
    const leasing = this.store
      .lease(w.rule, w.ref, want)
      .then(
        (got) => {
          w.reqLeased += got.requests;
          w.tokLeased += got.tokens;
          if (got.requests < want.requests || got.tokens < want.tokens)
            w.dryUntil = Math.min(w.endsAt, Date.now() + DRY_RECHECK_MS);
        },
        (err) => {
          // Without the store no replica can prove it is within the limit; refuse rather than overspend.
          this.opts.logger.error({ err }, 'leasing a limit slice failed');
          w.dryUntil = Date.now() + DRY_RECHECK_MS;
        },
      )
      .finally(() => {
        w.leasing = undefined;
      });
    w.leasing = leasing;
    return leasing;
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
      // Idle is the opposite of hot: the next burst starts again from the configured slices.
      w.reqSlice = this.opts.requestSlice;
      w.tokSlice = this.tokenFloor(w.rule);
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

/** A class rather than a closure per request: the hot path allocates one small object. */
class SliceReservation implements Reservation {
  private settled = false;

  constructor(
    private readonly taken: WindowState[],
    private readonly tokens: number,
    private readonly cost: Cost | undefined,
  ) {}

  settle(actualTokens: number, actualCostMicros = 0): void {
    if (this.settled) return;
    this.settled = true;
    const now = Date.now();
    for (const w of this.taken) {
      w.tokReserved -= amountOf(w.rule, this.tokens, this.cost);
      w.tokSpent += w.rule.currency
        ? this.cost?.currency === w.rule.currency
          ? Math.ceil(actualCostMicros)
          : 0
        : actualTokens;
      w.lastUsed = now;
    }
  }
}

/** What a request takes of a rule's token dimension: its tokens, or for a budget its cost in the budget's currency. */
const amountOf = (rule: LimitRule, tokens: number, cost: Cost | undefined): number =>
  rule.currency ? (cost?.currency === rule.currency ? cost.micros : 0) : tokens;

function refusal(rule: LimitRule): string {
  if (rule.currency) {
    const of = rule.subject.startsWith('budget:') ? `project '${rule.subject.slice(7)}'` : `tenant '${rule.tenantId}'`;
    return `the monthly budget of ${of} (${(rule.maxTokens ?? 0) / 1e6} ${rule.currency}) is spent`;
  }
  const what = rule.subject ? `API key ${rule.subject}` : `tenant '${rule.tenantId}'`;
  return `${what} is over its limit of ${limitText(rule)}`;
}

/** `wanted`, kept within a sixteenth of the limit (MAX_SLICE_SHARE) but never below `floor`; an unlimited dimension keeps `floor`. */
const grownSlice = (wanted: number, floor: number, limit: number | null): number =>
  limit === null ? floor : Math.max(floor, Math.min(wanted, Math.floor(limit * MAX_SLICE_SHARE)));

const limitText = (r: LimitRule): string =>
  [r.maxRequests !== null ? `${r.maxRequests} requests` : '', r.maxTokens !== null ? `${r.maxTokens} tokens` : '']
    .filter(Boolean)
    .join(' and ') + ` per ${r.windowSeconds} s`;
