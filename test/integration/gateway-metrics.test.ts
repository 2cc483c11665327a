import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import {
  bucketIndex,
  GatewayMetricsStore,
  LATENCY_BUCKETS_MS,
  type VersionMetricsRow,
} from '../../common/store/gateway-metrics';
import { budgetSubject, LimitStore, monthOf } from '../../common/store/limits';
import { createPool } from '../../common/store/pool';
import { TenantStore } from '../../common/store/tenants';
import { uniqueId } from '../support/platform';

let db: ReturnType<typeof createPool>;
beforeAll(() => {
  db = createPool(process.env.DATABASE_URL!, 2);
});
afterAll(async () => {
  await db?.end();
});

function row(
  tenantId: string,
  version: string,
  latencies: number[],
  errors: Record<string, number> = {},
): VersionMetricsRow {
  const latencyBuckets = new Array<number>(LATENCY_BUCKETS_MS.length + 1).fill(0);
  for (const ms of latencies) latencyBuckets[bucketIndex(ms)]!++;
  const errorCount = Object.values(errors).reduce((a, b) => a + b, 0);
  return {
    tenantId,
    modelId: 'm',
    version,
    requests: latencies.length,
    errors: errorCount,
    errorClasses: errors,
    latencyBuckets,
    ttftBuckets: latencyBuckets,
    promptTokens: 0,
    completionTokens: 0,
  };
}

describe('versionStats (the rollout analysis input)', () => {
  it('sums every replica flush of one version since a time: success rate and p95', async () => {
    const store = new GatewayMetricsStore(db);
    const tenant = uniqueId('t');
    const now = Date.now();
    await store.insert('replica-1', now - 120_000, [row(tenant, 'v2', Array(50).fill(3_000), { upstream_5xx: 50 })]);
    await store.insert('replica-1', now - 1_000, [
      row(tenant, 'v2', Array(45).fill(8), { timeout_first_byte: 1 }),
      row(tenant, 'v1', Array(10).fill(8)),
    ]);
    await store.insert('replica-2', now, [
      row(tenant, 'v2', [...Array(45).fill(8), ...Array(10).fill(200)], { upstream_5xx: 3 }),
    ]);

    const stats = await store.versionStats(tenant, 'm', 'v2', now - 60_000);
    expect(stats.requests).toBe(100);
    expect(stats.errors).toBe(4);
    expect(stats.successRate).toBeCloseTo(0.96);
    expect(stats.errorClasses).toEqual({ timeout_first_byte: 1, upstream_5xx: 3 });
    // Rank 95 of 100 is the 5th of the 10 requests in the (100, 250] ms bucket.
    expect(stats.p95LatencyMs).toBeCloseTo(175);
    expect(await store.versionStats(tenant, 'm', 'v3', now - 60_000)).toEqual({
      requests: 0,
      errors: 0,
      successRate: 1,
      p95LatencyMs: null,
      errorClasses: {},
    });
  });
});

describe('retention', () => {
  it('prune deletes flushes older than the cut-off and keeps newer ones', async () => {
    const store = new GatewayMetricsStore(db);
    const tenant = uniqueId('t');
    const now = Date.now();
    const day = 24 * 3_600_000;
    await store.insert('replica-1', now - 10 * day, [row(tenant, 'v1', Array(7).fill(8))]);
    await store.insert('replica-1', now - 1_000, [row(tenant, 'v1', Array(3).fill(8))]);

    // Not asserting the count: a gateway replica of another test file may prune the old row first.
    await store.prune(now - 7 * day);
    expect((await store.versionStats(tenant, 'm', 'v1', 0)).requests).toBe(3);
    expect(await store.prune(now - 7 * day)).toBe(0);
  });

  it('pruneEndedWindows deletes limit windows that ended before the cut-off, judged by their rule', async () => {
    const limits = new LimitStore(db);
    const tenant = uniqueId('t');
    await new TenantStore(db).createTenant(tenant, tenant);
    const now = Date.now();
    const minute = 60_000;
    const day = 24 * 3_600_000;
    const rule = (subject: string, windowSeconds: number) => ({
      tenantId: tenant,
      subject,
      windowSeconds,
      maxRequests: 100,
      maxTokens: null,
    });
    await limits.setLimit(rule('per-day', day / 1000));
    await limits.setLimit(rule('per-minute', 60));
    const open = (subject: string, windowSeconds: number, startMs: number) =>
      limits.lease(
        rule(subject, windowSeconds),
        { tenantId: tenant, subject, windowStart: startMs },
        { requests: 1, tokens: 0 },
      );
    const cutoff = now - 3_600_000;
    await open('per-day', day / 1000, now - 2 * 3_600_000); // started before the cut-off, still running: kept
    await open('per-minute', 60, now - 2 * 3_600_000); // ended an hour before the cut-off: deleted
    await open('per-minute', 60, now - minute); // current: kept
    await open('removed-rule', 60, now - 2 * 3_600_000); // its rule is gone: ended at its start, deleted
    // A budget's window is its calendar month, whatever rule row there is (none).
    const month = monthOf(now);
    const lastMonth = monthOf(month.start - 1);
    await open(budgetSubject(''), 1, month.start); // this month: kept
    await open(budgetSubject('p'), 1, lastMonth.start); // last month: ended at this month's start

    await limits.pruneEndedWindows(cutoff);
    const left = async (subject: string, startMs: number) =>
      limits.remaining({ tenantId: tenant, subject, windowStart: startMs });
    expect(await left('per-day', now - 2 * 3_600_000)).toBeDefined();
    expect(await left('per-minute', now - minute)).toBeDefined();
    expect(await left('per-minute', now - 2 * 3_600_000)).toBeUndefined();
    expect(await left('removed-rule', now - 2 * 3_600_000)).toBeUndefined();
    expect(await left(budgetSubject(''), month.start)).toBeDefined();
    // It ended before the cut-off (unless this month began within the last hour).
    if (month.start < cutoff) expect(await left(budgetSubject('p'), lastMonth.start)).toBeUndefined();
  });
});
