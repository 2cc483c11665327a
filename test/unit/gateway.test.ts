import { describe, expect, it, jest } from '@jest/globals';
import { SliceLimiter, type Admission } from '../../api/gateway/limiter';
import { abBucket, pickUpstream, type CompiledRoute } from '../../api/gateway/route-table';
import type { Dispatcher } from 'undici';
import { Cancellation, CircuitBreaker, StreamRelay } from '../../api/gateway/upstream';
import { StreamUsage, usageOfBody } from '../../api/gateway/usage-scan';
import { bucketIndex, LATENCY_BUCKETS_MS, quantileMs } from '../../common/store/gateway-metrics';
import type { LimitRule } from '../../common/store/limits';

const histogram = (latencies: number[]) => {
  const b = new Array<number>(LATENCY_BUCKETS_MS.length + 1).fill(0);
  for (const ms of latencies) b[bucketIndex(ms)]!++;
  return b;
};

describe('gateway pieces', () => {
  it('quantileMs interpolates inside the bucket holding the rank, like histogram_quantile', () => {
    // 100 requests: 90 in (5, 10], 10 in (100, 250]; rank 95 is the 5th of the 10 in (100, 250].
    const b = histogram([...Array(90).fill(8), ...Array(10).fill(200)]);
    expect(quantileMs(b, 0.95)).toBeCloseTo(100 + (150 * 5) / 10);
    expect(quantileMs(b, 0.5)).toBeCloseTo(5 + (5 * 50) / 90);
    expect(quantileMs(histogram([]), 0.95)).toBeNull();
    expect(quantileMs(histogram([120_000]), 0.95)).toBe(60_000);
  });

  it('reads usage from the tail of an answer or counts streamed chunks without it', () => {
    const body = Buffer.from(
      JSON.stringify({ data: [{ embedding: Array(2000).fill(0.5) }], usage: { prompt_tokens: 7, total_tokens: 7 } }),
    );
    expect(usageOfBody(body)).toEqual({ promptTokens: 7, completionTokens: 0 });
    const counted = new StreamUsage();
    const sse =
      'data: {"choices":[{"delta":{"content":"a"}}]}\n\ndata: {"choices":[{"delta":{"content":"b"}}]}\n\ndata: [DONE]\n\n';
    // Split mid-line, as TCP may deliver it.
    counted.push(Buffer.from(sse.slice(0, 30)));
    counted.push(Buffer.from(sse.slice(30)));
    expect(counted.result(11)).toEqual({ promptTokens: 11, completionTokens: 2 });
    const reported = new StreamUsage();
    reported.push(
      Buffer.from(
        `${sse.replace('data: [DONE]', 'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}\n\ndata: [DONE]')}`,
      ),
    );
    expect(reported.result(11)).toEqual({ promptTokens: 3, completionTokens: 2 });
  });

  it('counts the same stream events and finds the same usage however the stream is cut into chunks', () => {
    // Over 2 KB, so the kept tail wraps around.
    const events = Array.from({ length: 80 }, (_, i) => `data: {"choices":[{"delta":{"content":"t${i} é"}}]}\n\n`).join(
      '',
    );
    const withUsage = `${events}data: {"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":80,"total_tokens":89}}\n\ndata: [DONE]\n\n`;
    const bytes = Buffer.from(withUsage);
    const plain = Buffer.from(`${events}data: [DONE]\n\n`);
    // A deterministic walk of cut sizes from 1 byte up, so cuts fall inside "data:", inside "[DONE]" and inside é.
    const cut = (b: Buffer, seed: number) => {
      const u = new StreamUsage();
      for (let at = 0, n = seed; at < b.length; at += n, n = (n * 7 + 3) % 97 || 1)
        u.push(b.subarray(at, Math.min(b.length, at + n)));
      return u;
    };
    for (let seed = 1; seed < 30; seed++) {
      expect(cut(plain, seed).result(5)).toEqual({ promptTokens: 5, completionTokens: 80 });
      expect(cut(bytes, seed).result(5)).toEqual({ promptTokens: 9, completionTokens: 80 });
    }
    // Wherever the kept tail wraps around, the usage event is read whole: a padding event moves the wrap point.
    for (let pad = 0; pad < 2048; pad += 37) {
      expect(cut(Buffer.from(`data: {"pad":"${'p'.repeat(pad)}"}\n\n${withUsage}`), 13).result(5)).toEqual({
        promptTokens: 9,
        completionTokens: 80,
      });
    }
    // A usage event further back than the tail kept (2 KB) is not searched for: the count stands.
    const early = new StreamUsage();
    early.push(Buffer.from('data: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}\n\n'));
    early.push(Buffer.from(`data: ${'x'.repeat(3000)}\n\n`));
    expect(early.result(5)).toEqual({ promptTokens: 5, completionTokens: 2 });
  });

  it('picks versions by weight, by pin, and sticky by caller for ab_test', () => {
    const up = (version: string) => ({
      version,
      url: `http://127.0.0.1/${version}`,
      origin: 'http://127.0.0.1',
      basePath: `/${version}`,
      breakerKey: 'http://127.0.0.1',
    });
    const route: CompiledRoute = { modelId: 'm', stable: up('s'), canary: up('c'), canaryWeight: 10, fallbacks: [] };
    expect(pickUpstream(route, 'weighted', 'u', () => 0.05).version).toBe('c');
    expect(pickUpstream(route, 'weighted', 'u', () => 0.1).version).toBe('s');
    expect(pickUpstream(route, 'canary', 'u', () => 0.99).version).toBe('c');
    expect(pickUpstream(route, 'stable', 'u', () => 0).version).toBe('s');
    expect(pickUpstream({ ...route, canary: null }, 'canary', 'u').version).toBe('s');
    for (const user of ['alice', 'bob', 'carol']) {
      const expected = abBucket(user) < 10 ? 'c' : 's';
      expect(new Set(Array.from({ length: 5 }, () => pickUpstream(route, 'ab_test', user).version))).toEqual(
        new Set([expected]),
      );
    }
  });

  it('a cancellation stops the call in progress, or a call that registers after it', () => {
    const c = new Cancellation();
    const stopped: string[] = [];
    c.onCancel((reason) => stopped.push(`first: ${reason.message}`));
    c.onCancel(undefined); // that call ended
    c.onCancel((reason) => stopped.push(`second: ${reason.message}`));
    expect(c.cancelled).toBe(false);
    c.cancel(new Error('gone'));
    c.cancel(new Error('twice'));
    expect(stopped).toEqual(['second: gone']);
    expect(c.cancelled).toBe(true);
    // Registered after the cancel: stopped at once.
    c.onCancel((reason) => stopped.push(`late: ${reason.message}`));
    expect(stopped).toEqual(['second: gone', 'late: gone']);
  });

  it('a stream relay hands on early chunks first, pauses the upstream while the client is full, and ends or fails', async () => {
    const calls: string[] = [];
    const controller = {
      pause: () => calls.push('pause'),
      resume: () => calls.push('resume'),
    } as unknown as Dispatcher.DispatchController;
    const relay = new StreamRelay(controller);
    relay.data(Buffer.from('a'));
    relay.data(Buffer.from('b'));
    const written: string[] = [];
    let room = true;
    const done = relay.forward((chunk) => {
      written.push(chunk.toString());
      return room;
    });
    expect(written).toEqual(['a', 'b']);
    room = false;
    relay.data(Buffer.from('c'));
    expect(calls).toEqual(['pause']);
    relay.resume();
    relay.end();
    await expect(done).resolves.toBeUndefined();
    expect([written, calls]).toEqual([
      ['a', 'b', 'c'],
      ['pause', 'resume'],
    ]);

    const broken = new StreamRelay(controller);
    broken.data(Buffer.from('x'));
    broken.fail(new Error('socket closed'));
    // Failed before anyone read it: the early chunk is still handed on, then the failure.
    const seen: string[] = [];
    await expect(broken.forward((chunk) => seen.push(chunk.toString()) > 0)).rejects.toThrow('socket closed');
    expect(seen).toEqual(['x']);
  });

  it('opens a circuit after consecutive failures and lets one probe through after the cool-down', () => {
    const b = new CircuitBreaker({ failures: 3, cooldownMs: 1_000 });
    b.failure(0);
    b.failure(0);
    b.success();
    b.failure(0);
    b.failure(0);
    expect(b.allow(10)).toBe(true);
    b.failure(10);
    expect(b.state).toBe('open');
    expect(b.allow(500)).toBe(false);
    expect(b.allow(1_010)).toBe(true);
    expect(b.allow(1_011)).toBe(false);
    b.failure(1_020);
    expect(b.allow(1_500)).toBe(false);
    expect(b.allow(2_020)).toBe(true);
    b.success();
    expect(b.state).toBe('closed');
    expect(b.allow(2_021)).toBe(true);
  });

  it('admits from the leased slice without waiting, grows the slices of a hot window within a share of the limit, never past the limit', async () => {
    const LIMIT = 3_200;
    let left = LIMIT;
    const asked: number[] = [];
    const store = {
      lease: async (_rule: LimitRule, _w: unknown, want: { requests: number; tokens: number }) => {
        asked.push(want.requests);
        const requests = Math.min(left, want.requests);
        left -= requests;
        return { requests, tokens: 0 };
      },
      adjust: async () => undefined,
    };
    const limiter = new SliceLimiter(store, {
      requestSlice: 10,
      tokenSlice: 1_000,
      budgetSlice: 1_000,
      leaseIdleMs: 60_000,
      logger: { warn: () => undefined, error: () => undefined },
    });
    const rules: LimitRule[] = [
      { tenantId: 't', subject: '', windowSeconds: 2_000_000_000, maxRequests: LIMIT, maxTokens: null },
    ];
    let ok = 0;
    let waited = 0;
    for (let i = 0; i < LIMIT + 50; i++) {
      const a = limiter.admit(rules, 5);
      const admission: Admission = a instanceof Promise ? await a : a;
      if (admission.ok) {
        ok++;
        if (a instanceof Promise) waited++;
        admission.reservation.settle(5);
      }
      // Requests arrive between turns of the event loop, where a lease leased ahead lands.
      await new Promise(setImmediate);
    }
    await limiter.close();
    expect(ok).toBe(LIMIT);
    expect(Math.max(...asked)).toBe(LIMIT / 16);
    // 320 leases at the configured slice; growing to a sixteenth of the limit takes 5, then 15 more use it up.
    expect(asked.length).toBeLessThanOrEqual(25);
    // Once the slices have grown, the next one is leased ahead: only the first requests waited for the store.
    expect(waited).toBeLessThanOrEqual(2);
  });

  it('starts the next window of a busy key at its grown slices: its first requests wait for one lease, not one per doubling', async () => {
    const asked: number[] = [];
    const store = {
      lease: async (_rule: LimitRule, _w: unknown, want: { requests: number; tokens: number }) => {
        asked.push(want.requests);
        return { requests: want.requests, tokens: 0 };
      },
      adjust: async () => undefined,
    };
    // The clock is set by hand; the event loop (setImmediate) still turns, so leases land between requests.
    jest.useFakeTimers({
      doNotFake: ['setImmediate', 'nextTick', 'queueMicrotask'],
      now: Date.UTC(2026, 0, 1, 0, 0, 30),
    });
    try {
      const limiter = new SliceLimiter(store, {
        requestSlice: 10,
        tokenSlice: 1_000,
        budgetSlice: 1_000,
        leaseIdleMs: 60_000,
        logger: { warn: () => undefined, error: () => undefined },
      });
      const rules: LimitRule[] = [
        { tenantId: 't', subject: '', windowSeconds: 60, maxRequests: 160_000, maxTokens: null },
      ];
      const burst = async (n: number) => {
        let waited = 0;
        for (let i = 0; i < n; i++) {
          const a = limiter.admit(rules, 1);
          const admission: Admission = a instanceof Promise ? await a : a;
          if (!admission.ok) throw new Error(admission.reason);
          if (a instanceof Promise) waited++;
          admission.reservation.settle(1);
          await new Promise(setImmediate);
        }
        return waited;
      };
      await burst(3_000);
      const grown = Math.max(...asked);
      expect(grown).toBeGreaterThan(10);
      asked.length = 0;
      jest.setSystemTime(Date.UTC(2026, 0, 1, 0, 1, 0)); // the next window
      const waited = await burst(3_000);
      expect(asked[0]).toBeGreaterThanOrEqual(grown);
      expect(waited).toBe(1);
      // Idle longer than leaseIdleMs: the window after that starts from the configured slice again.
      asked.length = 0;
      jest.setSystemTime(Date.UTC(2026, 0, 1, 0, 3, 0));
      await burst(1);
      expect(asked[0]).toBe(10);
      await limiter.close();
    } finally {
      jest.useRealTimers();
    }
  });
});
