import { CEILING_SUBJECT, type LimitRule } from '../../common/store/limits';

/** The share of a tenant's limit its batches may use together, so interactive traffic keeps the rest. */
export const BATCH_LIMIT_SHARE = 0.5;
/** The limit subject of a tenant's batch traffic (no key id contains a space, so no key's limit is named so). */
export const BATCH_SUBJECT = 'batch traffic';

const share = (n: number | null) => (n === null ? null : Math.max(1, Math.floor(n * BATCH_LIMIT_SHARE)));

/**
 * One more limit for batch traffic: BATCH_LIMIT_SHARE of the tightest tenant-wide limit (the tenant's own or the
 * platform's ceiling on it), over the same window, held across replicas like any other. None when the tenant has no
 * tenant-wide limit.
 */
export function batchShareOf(rules: readonly LimitRule[]): LimitRule[] {
  const tenantWide = rules.filter((r) => r.subject === '' || r.subject === CEILING_SUBJECT);
  if (tenantWide.length === 0) return [];
  const perSecond = (r: LimitRule) => (r.maxRequests ?? Infinity) / r.windowSeconds;
  const tightest = tenantWide.reduce((a, b) => (perSecond(b) < perSecond(a) ? b : a));
  return [
    {
      tenantId: tightest.tenantId,
      subject: BATCH_SUBJECT,
      windowSeconds: tightest.windowSeconds,
      maxRequests: share(tightest.maxRequests),
      maxTokens: share(tightest.maxTokens),
    },
  ];
}
