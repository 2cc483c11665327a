import { describe, expect, it } from '@jest/globals';
import { GatewayMeter } from '../../api/gateway/meter';
import type { GatewayMetricsStore } from '../../common/store/gateway-metrics';
import type { UsageStore } from '../../common/store/usage';

const HOUR = 3_600_000;
const quiet = { warn: () => {}, error: () => {} };
const usage = { add: async () => {} } as unknown as UsageStore;

describe('GatewayMeter retention', () => {
  it('deletes old metrics, ended limit windows and old audit rows on its first flush, then not again within the hour', async () => {
    const metricCutoffs: number[] = [];
    const windowCutoffs: number[] = [];
    const auditCutoffs: number[] = [];
    const audit = { prune: async (before: number) => void auditCutoffs.push(before) };
    const auditRetentionMs = 30 * 24 * HOUR;
    const metrics = {
      insert: async () => {},
      prune: async (before: number) => (metricCutoffs.push(before), 0),
    } as unknown as GatewayMetricsStore;
    const limits = { pruneEndedWindows: async (before: number) => (windowCutoffs.push(before), 0) };
    const retentionMs = 7 * 24 * HOUR;
    const meter = new GatewayMeter({
      metrics,
      usage,
      limits,
      flushMs: HOUR,
      retentionMs,
      audit,
      auditRetentionMs,
      logger: quiet,
    });
    const before = Date.now();
    await meter.flush();
    await meter.flush();
    await meter.close();
    expect(metricCutoffs).toHaveLength(1);
    expect(metricCutoffs[0]).toBeGreaterThanOrEqual(before - retentionMs);
    expect(metricCutoffs[0]).toBeLessThanOrEqual(Date.now() - retentionMs);
    expect(windowCutoffs).toHaveLength(1);
    expect(windowCutoffs[0]).toBeGreaterThanOrEqual(before - HOUR);
    expect(windowCutoffs[0]).toBeLessThanOrEqual(Date.now() - HOUR);
    expect(auditCutoffs).toHaveLength(1);
    expect(auditCutoffs[0]).toBeGreaterThanOrEqual(before - auditRetentionMs);
    expect(auditCutoffs[0]).toBeLessThanOrEqual(Date.now() - auditRetentionMs);
  });

  it('a slow delete does not hold back flushes, and close waits for it', async () => {
    let finishPrune!: () => void;
    const pruned = new Promise<number>((resolve) => (finishPrune = () => resolve(0)));
    const inserted: number[] = [];
    const metrics = {
      insert: async (_replica: string, at: number) => void inserted.push(at),
      prune: () => pruned,
    } as unknown as GatewayMetricsStore;
    const meter = new GatewayMeter({
      metrics,
      usage,
      limits: { pruneEndedWindows: async () => 0 },
      flushMs: HOUR,
      retentionMs: HOUR,
      audit: { prune: async () => {} },
      auditRetentionMs: HOUR,
      logger: quiet,
    });
    meter.record({
      tenantId: 't',
      projectId: 'p',
      modelId: 'm',
      version: 'v1',
      subject: 'k',
      status: 200,
      latencyMs: 5,
      promptTokens: 1,
      completionTokens: 1,
    });
    await meter.flush();
    expect(inserted).toHaveLength(1);
    let closed = false;
    const closing = meter.close().then(() => (closed = true));
    // Every pending microtask (the final flush included) has run by the next macrotask.
    await new Promise((resolve) => setImmediate(resolve));
    expect(closed).toBe(false);
    finishPrune();
    await closing;
    expect(closed).toBe(true);
  });
});

describe('GatewayMeter limits', () => {
  it('counts refused requests per version and limit scope, with no usage and no rollout metrics', async () => {
    const inserted: unknown[] = [];
    const added: unknown[] = [];
    const meter = new GatewayMeter({
      metrics: { insert: async (...args: unknown[]) => void inserted.push(args), prune: async () => 0 } as never,
      usage: { add: async (rows: unknown[]) => void added.push(...rows) } as unknown as UsageStore,
      limits: { pruneEndedWindows: async () => 0 },
      flushMs: HOUR,
      retentionMs: HOUR,
      audit: { prune: async () => {} },
      auditRetentionMs: HOUR,
      logger: quiet,
    });
    const v = { tenantId: 't', modelId: 'm', version: 'v1' };
    meter.limited(v, 'key');
    meter.limited(v, 'key');
    meter.limited(v, 'ceiling');
    const text = await meter.metrics();
    expect(text).toContain('llmhub_gateway_rate_limited_total{tenant="t",model="m",version="v1",limit="key"} 2');
    expect(text).toContain('llmhub_gateway_rate_limited_total{tenant="t",model="m",version="v1",limit="ceiling"} 1');
    expect(text).not.toContain('llmhub_gateway_requests_total{');
    await meter.close();
    // The analysis reads the flushed rows: a refused request is neither a request nor an error of the version.
    expect(inserted).toEqual([]);
    expect(added).toEqual([]);
  });
});
