import { describe, expect, it } from '@jest/globals';
import type { AutoscalingSpec } from '../../contracts/autoscaling';
import { hpaPass, type HpaPass } from '../../workflows/support/hpa';

const settings: AutoscalingSpec = {
  minReplicas: 1,
  maxReplicas: 10,
  target: { concurrency: 2 },
  scaleDownDelay: '3s',
  scaleToZeroAfter: '1m',
};
const NOW = 1_000_000;
const pass = (p: Partial<HpaPass> & { concurrency?: number }) =>
  hpaPass({
    settings,
    current: 1,
    load: { concurrency: p.concurrency ?? 0, tokensPerSecond: 0 },
    now: NOW,
    idleMs: 0,
    wake: false,
    recommendations: [],
    ...p,
  });

describe('the autoscaler pass (the HPA rule)', () => {
  it('wants ceil(load / target) replicas, bounded by maxReplicas and by the step per pass', () => {
    expect(pass({ current: 1, concurrency: 5.5 })).toMatchObject({ desired: 3, next: 3, metric: 5.5 });
    // From 1 replica at most 5 (double or +4) in one pass, whatever the load wants.
    expect(pass({ current: 1, concurrency: 18 })).toMatchObject({ desired: 9, next: 5 });
    expect(pass({ current: 5, concurrency: 100 })).toMatchObject({ desired: 10, next: 10 });
  });

  it('changes nothing within 10 % of the target', () => {
    expect(pass({ current: 3, concurrency: 6.5 })).toMatchObject({ desired: 3, next: 3 });
    expect(pass({ current: 3, concurrency: 5.5 })).toMatchObject({ desired: 3, next: 3 });
    expect(pass({ current: 3, concurrency: 7 })).toMatchObject({ desired: 4, next: 4 });
  });

  it('scales down only to the highest recommendation of the stabilisation window', () => {
    const recent = [{ at: NOW - 2_000, desired: 4 }];
    const held = pass({ current: 4, concurrency: 0, recommendations: recent });
    expect(held).toMatchObject({ desired: 1, next: 4 });
    expect(held.recommendations).toEqual([...recent, { at: NOW, desired: 1 }]);
    // Once the high one is older than scaleDownDelay, down to the minimum.
    const old = [{ at: NOW - 3_000, desired: 4 }];
    expect(pass({ current: 4, concurrency: 0, recommendations: old })).toMatchObject({
      next: 1,
      recommendations: [{ at: NOW, desired: 1 }],
    });
  });

  it('goes to zero after scaleToZeroAfter without traffic, only with minReplicas 0, and a wake-up wants one', () => {
    const zero = { ...settings, minReplicas: 0 };
    const recent = [{ at: NOW - 1_000, desired: 3 }];
    expect(pass({ settings: zero, current: 3, idleMs: 60_000, recommendations: recent })).toMatchObject({
      next: 0,
      toZero: true,
      message: 'no traffic for 60 s',
    });
    expect(pass({ settings: zero, current: 1, idleMs: 59_000 })).toMatchObject({ next: 1, toZero: false });
    expect(pass({ current: 1, idleMs: 3_600_000 })).toMatchObject({ next: 1, toZero: false });
    expect(pass({ settings: zero, current: 0, idleMs: 3_600_000, wake: true })).toMatchObject({
      next: 1,
      metric: null,
    });
    expect(pass({ settings: zero, current: 0, idleMs: 3_600_000 })).toMatchObject({ next: 0 });
  });

  it('scales on tokens per second when the target says so', () => {
    const tokens = { ...settings, target: { tokensPerSecond: 100 } };
    expect(
      hpaPass({
        settings: tokens,
        current: 1,
        load: { concurrency: 50, tokensPerSecond: 250 },
        now: NOW,
        idleMs: 0,
        wake: false,
        recommendations: [],
      }),
    ).toMatchObject({ desired: 3, next: 3 });
  });
});
