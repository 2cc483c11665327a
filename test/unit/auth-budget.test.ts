import { describe, expect, it } from '@jest/globals';
import { FailureBudget, sourceOf } from '../../api/plugins/auth-budget';
import { ApiKeyCache, LookupCache } from '../../api/plugins/key-cache';
import type { ApiKeyRecord } from '../../common/store/tenants';

const record = (id: string): ApiKeyRecord => ({
  id,
  tenantId: 't',
  name: id,
  role: 'viewer',
  revoked: false,
  expiresAt: null,
  tenantSuspended: false,
});

/** A key store that knows the tokens given, counts lookups, and answers when told to. */
function store(known: string[]) {
  const calls: string[] = [];
  return {
    calls,
    verifyApiKey: (token: string) => {
      calls.push(token);
      return Promise.resolve(known.includes(token) ? record(token) : undefined);
    },
  };
}

describe('failed-authentication budget', () => {
  it('counts IPv4 addresses one by one and IPv6 addresses by /64', () => {
    expect(sourceOf('192.0.2.1')).toBe('192.0.2.1');
    expect(sourceOf('::ffff:192.0.2.1')).toBe('192.0.2.1');
    expect(sourceOf('2001:db8:0:1::1')).toBe('2001:db8:0:1::/64');
    expect(sourceOf('2001:0db8:0000:0001:ffff:0:0:9')).toBe('2001:db8:0:1::/64');
    expect(sourceOf('2001:db8::1')).toBe('2001:db8:0:0::/64');
    expect(sourceOf('::1')).toBe('0:0:0:0::/64');
    expect(sourceOf('fe80::1%eth0')).toBe('fe80:0:0:0::/64');
  });

  it('allows perMinute attempts, refuses the next with the seconds until one is back, and refills evenly', () => {
    let now = 0;
    const budget = new FailureBudget(6, 100, () => now);
    for (let i = 0; i < 6; i++) expect(budget.take('a')).toEqual({ ok: true });
    expect(budget.take('a')).toEqual({ ok: false, retryAfterSeconds: 10 });
    expect(budget.take('b')).toEqual({ ok: true });
    now += 5_000;
    expect(budget.take('a')).toEqual({ ok: false, retryAfterSeconds: 5 });
    now += 5_000;
    expect(budget.take('a')).toEqual({ ok: true });
    expect(budget.take('a').ok).toBe(false);
    budget.refund('a');
    expect(budget.take('a')).toEqual({ ok: true });
  });
});

describe('API key cache', () => {
  it('unknown tokens never push a known key out, and cost one lookup each at most', async () => {
    const s = store(['real']);
    const cache = new ApiKeyCache(s, 60_000, { maxKnown: 2, maxUnknown: 10 });
    expect(await cache.verifyApiKey('real')).toMatchObject({ id: 'real' });
    for (let i = 0; i < 1_000; i++) expect(await cache.verifyApiKey(`fake-${i}`)).toBeUndefined();
    expect(cache.recognises('real')).toBe(true);
    await cache.verifyApiKey('real');
    expect(s.calls.filter((c) => c === 'real')).toHaveLength(1);
    // The last unknown tokens are remembered: asked again, no lookup.
    await cache.verifyApiKey('fake-999');
    expect(s.calls).toHaveLength(1_001);
  });

  it('concurrent misses share one lookup; evict and clear end the trust but the key stays recognised', async () => {
    const s = store(['llmhub_k1_x', 'llmhub_k2_x']);
    const cache = new ApiKeyCache(s, 60_000);
    await Promise.all([cache.verifyApiKey('llmhub_k1_x'), cache.verifyApiKey('llmhub_k1_x')]);
    await cache.verifyApiKey('llmhub_k2_x');
    expect(s.calls).toEqual(['llmhub_k1_x', 'llmhub_k2_x']);
    cache.evict('k1');
    expect(cache.recognises('llmhub_k1_x')).toBe(true);
    await cache.verifyApiKey('llmhub_k1_x');
    await cache.verifyApiKey('llmhub_k2_x');
    expect(s.calls).toEqual(['llmhub_k1_x', 'llmhub_k2_x', 'llmhub_k1_x']);
    cache.clear();
    await cache.verifyApiKey('llmhub_k2_x');
    expect(s.calls).toHaveLength(4);
    expect(cache.recognises('llmhub_k2_x')).toBe(true);
  });

  it('a lookup in flight when its key is evicted is answered but not kept', async () => {
    let release!: (r: ApiKeyRecord) => void;
    const calls: string[] = [];
    const cache = new ApiKeyCache(
      {
        verifyApiKey: (token) => {
          calls.push(token);
          return calls.length === 1 ? new Promise((r) => (release = r)) : Promise.resolve(record(token));
        },
      },
      60_000,
    );
    const first = cache.verifyApiKey('llmhub_k1_x');
    cache.evict('k1');
    release(record('llmhub_k1_x'));
    expect(await first).toMatchObject({ id: 'llmhub_k1_x' });
    expect(cache.recognises('llmhub_k1_x')).toBe(false);
    await cache.verifyApiKey('llmhub_k1_x');
    expect(calls).toHaveLength(2);
  });
});

describe('LookupCache.peek', () => {
  it('answers without a promise only once a fresh lookup has come, and never a failed one', async () => {
    let answer!: (v: string) => void;
    let fail!: (e: Error) => void;
    const cache = new LookupCache(
      () =>
        new Promise<string>((resolve, reject) => {
          answer = resolve;
          fail = reject;
        }),
      60_000,
    );
    const first = cache.get('a');
    expect(cache.peek('a')).toBeUndefined();
    answer('active');
    await first;
    expect(cache.peek('a')).toEqual({ value: 'active' });
    cache.clear();
    expect(cache.peek('a')).toBeUndefined();

    const failing = cache.get('b');
    fail(new Error('down'));
    await expect(failing).rejects.toThrow('down');
    expect(cache.peek('b')).toBeUndefined();

    const stale = new LookupCache(async () => 'suspended', 0);
    await stale.get('c');
    expect(stale.peek('c')).toBeUndefined();
  });
});
