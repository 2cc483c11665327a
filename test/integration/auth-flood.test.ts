import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it, jest } from '@jest/globals';
import type { LightMyRequestResponse } from 'fastify';
import { sourceOf } from '../../api/plugins/auth-budget';
import { bearer, startTestPlatform, type TestPlatform, type TestTenant } from '../support/platform';

/**
 * Made-up credentials under attack: each source has a budget of failed authentications, past which its unrecognised
 * credentials are refused before any lookup; real keys stay cached and are never refused.
 */

const BUDGET = 20;
let p: TestPlatform;
let t: TestTenant;

/** A well-formed key no one has: `llmhub_<16 hex>_<43 base64url>`. */
const madeUpKey = () => `llmhub_${randomBytes(8).toString('hex')}_${randomBytes(32).toString('base64url')}`;

beforeAll(async () => {
  p = await startTestPlatform({
    worker: false,
    // Long enough that no verdict ends during the test: a key answering without a lookup shows it is still cached.
    gateway: { keyCacheTtlMs: 3_600_000 },
    // Small caches: a flood that could push known keys out would do it many times over.
    auth: { failuresPerMinute: BUDGET, keyCacheLimits: { maxKnown: 100, maxUnknown: 50 } },
  });
  t = await p.createTenant('flood');
});
afterAll(async () => {
  await p?.close();
});

const get = (url: string, key: string, remoteAddress: string, headers: Record<string, string> = {}) =>
  p.app.inject({ method: 'GET', url, remoteAddress, headers: { ...bearer(key), ...headers } });

function expectPlatformError(res: LightMyRequestResponse, type: string, details?: Record<string, unknown>): void {
  expect(JSON.parse(res.body)).toEqual({
    error: { type, message: expect.any(String), ...(details ? { details } : {}) },
  });
}

describe('a flood of made-up API keys', () => {
  it('costs each source at most its budget of lookups, and leaves real keys cached and answering', async () => {
    const roles = ['viewer', 'developer', 'operator', 'approver', 'admin'] as const;
    for (const role of roles) expect((await get('/v1/models', t.keys[role], '127.0.0.1')).statusCode).toBe(200);
    expect((await get('/metrics', p.operatorKey, '127.0.0.1')).statusCode).toBe(200);

    const tenants = p.app.platform.tenants;
    const keyLookups = jest.spyOn(tenants, 'verifyApiKey');
    const operatorLookups = jest.spyOn(tenants, 'verifyPlatformKey');
    // Two IPv6 addresses of one /64 share a budget: one host usually holds the whole /64.
    const addresses = ['127.0.0.1', '10.1.0.1', '10.1.0.2', '192.0.2.7', '2001:db8:1:2::1', '2001:db8:1:2::ff'];
    const sources = new Set(addresses.map(sourceOf));
    expect(sources.size).toBe(5);

    const started = Date.now();
    const answers: { status: number; retryAfter: unknown; res: LightMyRequestResponse; inference: boolean }[] = [];
    for (let batch = 0; batch < 50; batch++) {
      const sent = Array.from({ length: 200 }, (_, i) => {
        const remoteAddress = addresses[i % addresses.length]!;
        const inference = i % 10 === 0;
        const res = inference
          ? p.app.inject({
              method: 'POST',
              url: '/v1/chat/completions',
              remoteAddress,
              headers: bearer(madeUpKey()),
              payload: { model: 'm', messages: [{ role: 'user', content: 'hi' }] },
            })
          : get('/v1/models', madeUpKey(), remoteAddress);
        return res.then((r) => ({ status: r.statusCode, retryAfter: r.headers['retry-after'], res: r, inference }));
      });
      answers.push(...(await Promise.all(sent)));
    }
    const minutes = (Date.now() - started) / 60_000;

    expect(answers).toHaveLength(10_000);
    expect(answers.filter((a) => a.status !== 401 && a.status !== 429).map((a) => a.status)).toEqual([]);
    const refused = answers.filter((a) => a.status === 429);
    expect(refused.length).toBeGreaterThan(9_000);
    expect(refused.filter((a) => !(Number(a.retryAfter) >= 1))).toEqual([]);
    // In the platform's shape on control routes, in OpenAI's on the inference routes.
    const control = refused.find((a) => !a.inference)!;
    expectPlatformError(control.res, 'rate_limited', { retryAfterSeconds: Number(control.retryAfter) });
    const inference = refused.find((a) => a.inference)!;
    expect(JSON.parse(inference.res.body)).toEqual({
      error: { message: expect.any(String), type: 'rate_limit_error', param: null, code: 'rate_limited' },
    });
    expectPlatformError(answers.find((a) => a.status === 401 && !a.inference)!.res, 'unauthorized');

    // Each source's bucket holds BUDGET attempts and refills BUDGET a minute while the flood lasts.
    const bound = sources.size * Math.ceil(BUDGET * (1 + minutes));
    expect(keyLookups.mock.calls.length).toBeGreaterThan(0);
    expect(keyLookups.mock.calls.length).toBeLessThanOrEqual(bound);
    expect(operatorLookups).not.toHaveBeenCalled();

    // Every real key still answers from every flooded source, from the cache: not one more lookup.
    const before = keyLookups.mock.calls.length;
    for (const address of addresses)
      for (const role of roles) {
        const res = await get('/v1/models', t.keys[role], address);
        expect({ address, role, status: res.statusCode }).toEqual({ address, role, status: 200 });
      }
    expect(keyLookups.mock.calls.length).toBe(before);
    // An operator key that has verified here is not held to the budget either (it is looked up at every call).
    expect((await get('/metrics', p.operatorKey, '127.0.0.1')).statusCode).toBe(200);
    expect(operatorLookups).toHaveBeenCalledTimes(1);

    // A key this replica has never seen is an unknown credential: refused unread from a flooded source, until its
    // budget refills; from any other source it works at once.
    const fresh = (await p.tenants.createApiKey(t.id, 'fresh', 'viewer')).key;
    // The bucket refills one attempt every 60/BUDGET s: spend what came back since the flood first.
    while ((await get('/v1/models', madeUpKey(), '10.1.0.1')).statusCode !== 429);
    const late = await get('/v1/models', fresh, '10.1.0.1');
    expect(late.statusCode).toBe(429);
    expect(Number(late.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect((await get('/v1/models', fresh, '10.2.0.1')).statusCode).toBe(200);
    expect((await get('/v1/models', fresh, '10.1.0.1')).statusCode).toBe(200);
    keyLookups.mockRestore();
    operatorLookups.mockRestore();
  });

  it('the same unknown key sent again is answered from memory', async () => {
    const lookups = jest.spyOn(p.app.platform.tenants, 'verifyApiKey');
    const key = madeUpKey();
    for (let i = 0; i < 5; i++) expect((await get('/v1/models', key, '10.3.0.1')).statusCode).toBe(401);
    expect(lookups).toHaveBeenCalledTimes(1);
    lookups.mockRestore();
  });

  it('operator keys and tokens that are not keys are held to the same budget', async () => {
    const address = '10.4.0.1';
    const lookups = jest.spyOn(p.app.platform.tenants, 'verifyPlatformKey');
    const statuses: number[] = [];
    for (let i = 0; i < BUDGET + 5; i++) {
      const madeUp = i % 2 ? `llmhubop_${madeUpKey().slice('llmhub_'.length)}` : `not-a-key-${i}`;
      statuses.push((await get('/v1/platform/tenants', madeUp, address)).statusCode);
    }
    expect(statuses.slice(0, BUDGET).every((s) => s === 401)).toBe(true);
    expect(statuses.slice(BUDGET)).toEqual(Array(5).fill(429));
    expect(lookups.mock.calls.length).toBeLessThanOrEqual(Math.ceil(BUDGET / 2) + 1);
    lookups.mockRestore();
  });

  it('X-Forwarded-For is not believed when no proxy is trusted', async () => {
    const address = '10.5.0.1';
    for (let i = 0; i < BUDGET + 1; i++)
      await get('/v1/models', madeUpKey(), address, { 'x-forwarded-for': `203.0.113.${i}` });
    const res = await get('/v1/models', madeUpKey(), address, { 'x-forwarded-for': '203.0.113.200' });
    expect(res.statusCode).toBe(429);
  });
});

describe('behind a trusted proxy', () => {
  let proxied: TestPlatform;
  beforeAll(async () => {
    proxied = await startTestPlatform({
      worker: false,
      trustedProxies: ['10.255.0.0/30'],
      auth: { failuresPerMinute: 3 },
    });
  });
  afterAll(async () => {
    await proxied?.close();
  });

  it('the source is the address the proxy names in X-Forwarded-For; from anyone else, the peer address', async () => {
    const send = (remoteAddress: string, forwardedFor: string) =>
      proxied.app
        .inject({
          method: 'GET',
          url: '/v1/models',
          remoteAddress,
          headers: { ...bearer(madeUpKey()), 'x-forwarded-for': forwardedFor },
        })
        .then((r) => r.statusCode);
    // Through the proxy, one client's budget is its own...
    const first: number[] = [];
    for (let i = 0; i < 4; i++) first.push(await send('10.255.0.1', '198.51.100.1'));
    expect(first).toEqual([401, 401, 401, 429]);
    // ...another client behind the same proxy is not refused for it, whichever proxy address it came through...
    expect(await send('10.255.0.2', '198.51.100.2')).toBe(401);
    // ...and a peer that is not a trusted proxy cannot pick its source with the header.
    const direct: number[] = [];
    for (let i = 0; i < 4; i++) direct.push(await send('10.9.0.1', `198.51.100.${10 + i}`));
    expect(direct).toEqual([401, 401, 401, 429]);
  });
});
