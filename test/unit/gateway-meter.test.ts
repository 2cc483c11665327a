import { describe, expect, it } from '@jest/globals';
import { GatewayMeter } from '../../api/gateway/meter';
import type { GatewayMetricsStore } from '../../common/store/gateway-metrics';
import type { UsageStore } from '../../common/store/usage';

describe('GatewayMeter retention', () => {
  it('deletes rows older than the retention on its first flush, then not again within the hour', async () => {
    const cutoffs: number[] = [];
    const metrics = { insert: async () => {}, prune: async (before: number) => (cutoffs.push(before), 0) } as unknown as GatewayMetricsStore;
    const usage = { add: async () => {} } as unknown as UsageStore;
    const retentionMs = 7 * 24 * 3_600_000;
    const meter = new GatewayMeter({ metrics, usage, flushMs: 3_600_000, retentionMs, logger: { warn: () => {}, error: () => {} } });
    const before = Date.now();
    await meter.flush();
    await meter.flush();
    await meter.close();
    expect(cutoffs).toHaveLength(1);
    expect(cutoffs[0]).toBeGreaterThanOrEqual(before - retentionMs);
    expect(cutoffs[0]).toBeLessThanOrEqual(Date.now() - retentionMs);
  });
});
