import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { LimitStore } from '../../common/store/limits';
import { RoutingStore } from '../../common/store/routing';
import { UsageStore } from '../../common/store/usage';
import { freePort, startProcess, waitFor, type ManagedProcess } from '../../deploy/dev/process';
import { startReferenceModelServer, type ReferenceModelServer } from '../../deploy/dev/model-server/server';
import { serveModel } from '../support/gateway';
import {
  bearer,
  eventually,
  startTestPlatform,
  uniqueId,
  type TestPlatform,
  type TestTenant,
} from '../support/platform';

/**
 * Two real gateway processes (`node --import tsx roles/gateway.ts`) on one PostgreSQL: limits, weights and key
 * revocations must hold across them. The settings below are the ones the assertions' bounds come from.
 */
const REFRESH_MS = 1_000;
const KEY_TTL_MS = 2_000;
const TOKEN_SLICE = 400;
const REQUEST_SLICE = 5;
/** A window that outlasts the test, so a window boundary can never reset a limit mid-test. */
const FOREVER_S = 2_000_000_000;
const ROOT = path.resolve(__dirname, '..', '..');

let p: TestPlatform;
let acme: TestTenant;
let upstreamA: ReferenceModelServer;
let upstreamB: ReferenceModelServer;
const apis: { url: string; proc: ManagedProcess }[] = [];
const MODEL = uniqueId('shared');

async function startApi(name: string) {
  const port = await freePort();
  const proc = await startProcess({
    name,
    command: process.execPath,
    args: ['--import', 'tsx', path.join(ROOT, 'roles', 'gateway.ts')],
    dataDir: path.join(process.env.LLMHUB_TEST_DATA!, uniqueId('replicas')),
    env: {
      API_PORT: String(port),
      GATEWAY_REFRESH_MS: String(REFRESH_MS),
      GATEWAY_KEY_CACHE_TTL_MS: String(KEY_TTL_MS),
      GATEWAY_TOKEN_SLICE: String(TOKEN_SLICE),
      GATEWAY_REQUEST_SLICE: String(REQUEST_SLICE),
      GATEWAY_METRICS_FLUSH_MS: '200',
      LOG_LEVEL: 'warn',
    },
  });
  const url = `http://127.0.0.1:${port}`;
  apis.push({ url, proc });
  await waitFor(`${name} to listen`, async () => (await fetch(`${url}/healthz`)).ok, 120_000, 250);
  return url;
}

beforeAll(async () => {
  p = await startTestPlatform();
  acme = await p.createTenant('acme');
  // Streams that take a while, so the 200 below are in flight together.
  [upstreamA, upstreamB] = await Promise.all([
    startReferenceModelServer({ name: 'a', faults: { ttftMs: 200, replyTokens: 20 } }),
    startReferenceModelServer({ name: 'b', faults: { replyTokens: 20 } }),
  ]);
  await serveModel(
    p.db,
    acme.id,
    MODEL,
    { a: upstreamA.url, b: upstreamB.url },
    { stable: 'a', canary: 'b', canaryWeight: 0 },
  );
  await Promise.all([startApi('api-1'), startApi('api-2')]);
});
afterAll(async () => {
  await Promise.all(apis.map((a) => a.proc.stop()));
  await Promise.all([upstreamA, upstreamB].map((s) => s?.close()));
  await p?.close();
});

/**
 * Waits until both replicas have read everything committed so far: a replica reads routes and limits in one
 * snapshot, so once both route a marker model by a weight written after those changes, both know them too.
 */
let markerWeight = 0;
async function untilBothRefreshed() {
  markerWeight = 100 - markerWeight;
  await new RoutingStore(p.db).setRoute(acme.id, MODEL, { stable: 'a', canary: 'b', canaryWeight: markerWeight });
  const expected = markerWeight === 100 ? 'b' : 'a';
  for (const { url } of apis) {
    await eventually(
      `${url} to refresh`,
      async () => (await call(url, acme.keys.developer, {})).headers.get('x-llmhub-model-version') === expected,
      30_000,
    );
  }
}

const call = (url: string, key: string, body: object, headers: Record<string, string> = {}) =>
  fetch(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: { ...bearer(key), 'content-type': 'application/json', ...headers },
    body: JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: 'hi' }], ...body }),
  });

describe('two gateway processes sharing PostgreSQL', () => {
  it('a weight change reaches both', async () => {
    const versionOn = async (url: string) =>
      (await call(url, acme.keys.developer, {})).headers.get('x-llmhub-model-version');
    for (const { url } of apis) expect(await versionOn(url)).toBe('a');
    // The bound is REFRESH_MS (poll), usually milliseconds (notification); the wait's deadline only adds slack for a loaded machine.
    await untilBothRefreshed();
    for (const { url } of apis) expect(await versionOn(url)).toBe('b');
    await untilBothRefreshed();
    for (const { url } of apis) expect(await versionOn(url)).toBe('a');
  });

  it('a revoked key stops working on both', async () => {
    const { id, key } = await p.tenants.createApiKey(acme.id, 'soon-revoked', 'developer');
    for (const { url } of apis) expect((await call(url, key, {})).status).toBe(200);
    await p.tenants.revokeApiKey(id);
    // Bound: KEY_TTL_MS when the revocation notification is lost; at once when it arrives.
    for (const { url } of apis) {
      const res = await eventually(
        `${url} to refuse the revoked key`,
        async () => {
          const r = await call(url, key, {});
          return r.status === 401 && r;
        },
        30_000,
      );
      expect(((await res.json()) as { error: unknown }).error).toMatchObject({
        type: 'authentication_error',
        message: 'API key has been revoked',
      });
    }
  });

  it('holds a request rate limit across both: 429 with Retry-After beyond it', async () => {
    const { key, id } = await p.tenants.createApiKey(acme.id, 'limited', 'developer');
    const LIMIT = 30;
    await new LimitStore(p.db).setLimit({
      tenantId: acme.id,
      subject: `key:${id}`,
      windowSeconds: FOREVER_S,
      maxRequests: LIMIT,
      maxTokens: null,
    });
    await untilBothRefreshed();
    const answers = await Promise.all(
      Array.from({ length: 80 }, (_, i) => call(apis[i % 2]!.url, key, { max_tokens: 1 })),
    );
    const ok = answers.filter((r) => r.status === 200).length;
    const limited = answers.filter((r) => r.status === 429);
    expect(ok + limited.length).toBe(80);
    expect(ok).toBeLessThanOrEqual(LIMIT);
    // A replica may end holding part of a slice the other could have used: the limit is under-used, never exceeded.
    expect(ok).toBeGreaterThanOrEqual(LIMIT - 2 * REQUEST_SLICE);
    for (const r of limited) {
      expect(Number(r.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
      expect(((await r.json()) as { error: unknown }).error).toMatchObject({
        type: 'rate_limit_error',
        code: 'rate_limited',
      });
    }
  });

  it('200 concurrent streams split across both never overspend a token budget beyond the outstanding slices plus one reservation per process', async () => {
    const tenant = await p.createTenant('budget');
    const model = uniqueId('budget');
    await serveModel(p.db, tenant.id, model, { a: upstreamA.url }, { stable: 'a' });
    const BUDGET = 6_000;
    await new LimitStore(p.db).setLimit({
      tenantId: tenant.id,
      subject: '',
      windowSeconds: FOREVER_S,
      maxRequests: null,
      maxTokens: BUDGET,
    });
    const body = { model, stream: true, max_tokens: 20, stream_options: { include_usage: true } };
    await untilBothRefreshed();

    const reservation =
      Math.ceil(Buffer.byteLength(JSON.stringify({ ...body, messages: [{ role: 'user', content: 'hi' }] })) / 4) +
      body.max_tokens;
    const answers = await Promise.all(
      Array.from({ length: 200 }, async (_, i) => {
        const r = await call(apis[i % 2]!.url, tenant.keys.developer, body);
        return { status: r.status, retryAfter: r.headers.get('retry-after'), text: await r.text() };
      }),
    );
    const streamed = answers.filter((a) => a.status === 200);
    const limited = answers.filter((a) => a.status === 429);
    expect(streamed.length + limited.length).toBe(200);
    expect(limited.length).toBeGreaterThan(0);
    expect(limited.every((a) => Number(a.retryAfter) >= 1)).toBe(true);
    expect(streamed.every((a) => a.text.endsWith('data: [DONE]\n\n'))).toBe(true);

    const usage = new UsageStore(p.db);
    const spent = await eventually(
      'usage of every stream to be flushed',
      async () => {
        const rows = await usage.totals(tenant.id);
        const requests = rows.reduce((a, r) => a + r.requests, 0);
        return requests === streamed.length && rows.reduce((a, r) => a + r.promptTokens + r.completionTokens, 0);
      },
      30_000,
    );
    expect(spent).toBeLessThanOrEqual(BUDGET + 2 * TOKEN_SLICE + 2 * reservation);
    // The budget was really handed out, not refused wholesale: reservations of the admitted streams cover it but for the slices.
    expect(streamed.length * reservation).toBeGreaterThanOrEqual(BUDGET - 2 * (TOKEN_SLICE + reservation));
  });
});
