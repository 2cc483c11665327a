import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { PassThrough } from 'node:stream';
import OpenAI from 'openai';
import { newKeyFile } from '../../common/credentials';
import { createLogger } from '../../common/logger';
import { startReferenceModelServer, type ReferenceModelServer } from '../../deploy/dev/model-server/server';
import { rolloutClient } from '../support/rollout';
import {
  bearer,
  eventually,
  startTestPlatform,
  uniqueId,
  type TestPlatform,
  type TestTenant,
} from '../support/platform';

// Characters that base64 and URL encoding both change, so each form of the secret is a different string.
const OPENAI_KEY = `sk-test+/=${randomBytes(12).toString('hex')}`;
const AZURE_KEY = `az+key/${randomBytes(12).toString('hex')}==`;
const SECRETS = [OPENAI_KEY, AZURE_KEY].flatMap((s) => [s, Buffer.from(s).toString('base64'), encodeURIComponent(s)]);

let p: TestPlatform;
let acme: TestTenant;
let openaiServer: ReferenceModelServer;
let azureServer: ReferenceModelServer;
let baseURL: string;
const logged: string[] = [];
/** Every answer the test got, for the leak scan. */
const answers: string[] = [];
const startedAt = new Date();
// Platform providers are shared by every tenant (and every test file): a name of this run's own.
const AZ_ID = uniqueId('az');
const AZ = `platform/${AZ_ID}`;
/** A gateway model per test, each mapped by every provider, so each test's route is new to the gateway. */
const MODELS = ['shape', 'canary', 'fallback', 'strategy', 'analysed'] as const;
const mapping = (model: string) => Object.fromEntries(MODELS.map((m) => [m, { model }]));

beforeAll(async () => {
  const sink = new PassThrough();
  sink.on('data', (c: Buffer) => logged.push(c.toString('utf8')));
  p = await startTestPlatform({
    gateway: { refreshMs: 500, metricsFlushMs: 200, breakerFailures: 100 },
    logger: createLogger('test', 'debug', sink),
  });
  baseURL = `${await p.app.listen({ host: '127.0.0.1', port: 0 })}/v1`;
  [openaiServer, azureServer] = await Promise.all([
    startReferenceModelServer({
      name: 'openai',
      provider: { shape: 'openai', apiKey: OPENAI_KEY, models: { 'gpt-x': 'gpt-x-2024' } },
    }),
    startReferenceModelServer({
      name: 'azure',
      provider: { shape: 'azure', apiKey: AZURE_KEY, models: { 'dep-chat': 'gpt-4o-azure' } },
    }),
  ]);
  acme = await p.createTenant('acme');
  for (const id of MODELS) await p.registry.createModel(acme.id, { id, name: id, description: 'served by providers' });
});
afterAll(async () => {
  await p?.close();
  await Promise.all([openaiServer, azureServer].map((s) => s?.close()));
});

async function call(method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, key: string, payload?: object) {
  const res = await p.app.inject({ method, url, headers: bearer(key), ...(payload ? { payload } : {}) });
  answers.push(JSON.stringify(res.headers), res.body);
  return res;
}
const chat = (model: string, headers: Record<string, string> = {}) =>
  p.app
    .inject({
      method: 'POST',
      url: '/v1/chat/completions',
      headers: { ...bearer(acme.keys.developer), ...headers },
      payload: { model, messages: [{ role: 'user', content: 'hello' }] },
    })
    .then((res) => (answers.push(JSON.stringify(res.headers), res.body), res));
const servedBy = async (model: string, headers: Record<string, string> = {}) => {
  const res = await chat(model, headers);
  expect(res.statusCode).toBe(200);
  return res.headers['x-llmhub-model-version'];
};
const faults = (s: ReferenceModelServer, f: object) =>
  fetch(s.url.replace(/\/v1$/, '/admin/faults'), { method: 'POST', body: JSON.stringify(f) });
/** Sets a model's first route and waits until the gateway serves it (its stable answers). */
async function route(model: string, body: object, expectVersion: string) {
  expect((await call('PUT', `/v1/provider-routes/${model}`, acme.keys.admin, body)).statusCode).toBe(200);
  await eventually(`the gateway to route ${model} to ${expectVersion}`, async () => {
    const res = await chat(model, { 'x-routing-strategy': 'stable' });
    return res.headers['x-llmhub-model-version'] === expectVersion;
  });
}

describe('registration', () => {
  it('a tenant admin registers its own provider, an operator one for all; no answer shows a credential', async () => {
    const oa = {
      id: 'oa',
      kind: 'openai',
      baseUrl: openaiServer.url,
      credential: OPENAI_KEY,
      headers: { 'x-org': 'acme' },
      models: mapping('gpt-x'),
    };
    expect((await call('POST', '/v1/providers', acme.keys.developer, oa)).statusCode).toBe(403);
    const made = await call('POST', '/v1/providers', acme.keys.admin, oa);
    expect(made.statusCode).toBe(201);
    expect(made.json()).toMatchObject({ id: 'oa', ref: 'oa', scope: 'tenant', headerNames: ['x-org'] });
    expect((await call('POST', '/v1/providers', acme.keys.admin, oa)).statusCode).toBe(409);

    const az = {
      id: AZ_ID,
      kind: 'azure',
      baseUrl: `http://127.0.0.1:${azureServer.port}`,
      apiVersion: '2024-10-21',
      credential: AZURE_KEY,
      models: mapping('dep-chat'),
    };
    expect((await call('POST', '/v1/platform/providers', acme.keys.admin, az)).statusCode).toBe(403);
    expect((await call('POST', '/v1/platform/providers', p.operatorKey, az)).statusCode).toBe(201);
    const { apiVersion: _, ...noVersion } = az;
    const missing = await call('POST', '/v1/platform/providers', p.operatorKey, { ...noVersion, id: `${AZ_ID}-2` });
    expect([missing.statusCode, missing.json().error.details.field]).toEqual([400, 'body.apiVersion']);

    const listed = await call('GET', '/v1/providers', acme.keys.admin);
    // The tenant's own first, then the platform's (other test files' among them).
    const refs = listed.json().providers.map((x: { ref: string }) => x.ref) as string[];
    expect(refs[0]).toBe('oa');
    expect(refs).toContain(AZ);
    // Stored only as an envelope.
    const { rows } = await p.db.query('SELECT credential::text AS c FROM providers WHERE tenant_id = $1 OR id = $2', [
      acme.id,
      AZ_ID,
    ]);
    for (const r of rows) for (const s of SECRETS) expect(r.c as string).not.toContain(s);
  });

  it('refuses internal base URLs by the egress check, and headers the platform sets itself', async () => {
    const base = { kind: 'openai', credential: 'x', models: mapping('m') };
    for (const [baseUrl, status] of [
      ['http://169.254.169.254/v1', 403],
      ['http://10.0.0.1/v1', 403],
      ['http://user:pw@127.0.0.1/v1', 400],
    ] as const) {
      const res = await call('POST', '/v1/providers', acme.keys.admin, { ...base, id: 'bad', baseUrl });
      expect([baseUrl, res.statusCode, res.json().error.details.field]).toEqual([baseUrl, status, 'body.baseUrl']);
    }
    const res = await call('POST', '/v1/providers', acme.keys.admin, {
      ...base,
      id: 'bad',
      baseUrl: openaiServer.url,
      headers: { Authorization: 'Bearer other' },
    });
    expect([res.statusCode, res.json().error.details.field]).toEqual([400, 'body.headers.Authorization']);
  });
});

describe('routing through each shape', () => {
  it("stable to OpenAI's shape: the provider's model and credential, none of the platform's headers", async () => {
    await route('shape', { stable: 'oa' }, 'provider:oa');
    const res = await chat('shape');
    expect(res.json().model).toBe('gpt-x-2024');
    const seen = openaiServer.requests[openaiServer.requests.length - 1]!;
    expect(seen.path).toBe('/v1/chat/completions');
    expect(seen.headers['x-org']).toBe('acme');
    expect(seen.headers['x-tenant-id']).toBeUndefined();
  });

  it("canary to Azure's deployment shape, streamed through the OpenAI client", async () => {
    await route('canary', { stable: 'oa', canary: AZ, canaryWeight: 10 }, 'provider:oa');
    const client = new OpenAI({
      apiKey: acme.keys.developer,
      baseURL,
      maxRetries: 0,
      defaultHeaders: { 'x-routing-strategy': 'canary' },
    });
    const stream = await client.chat.completions.create({
      model: 'canary',
      messages: [{ role: 'user', content: 'hello' }],
      stream: true,
    });
    const models = new Set<string>();
    let text = '';
    for await (const chunk of stream) {
      models.add(chunk.model);
      text += chunk.choices[0]?.delta.content ?? '';
    }
    answers.push(text);
    expect([...models]).toEqual(['gpt-4o-azure']);
    expect(text.length).toBeGreaterThan(0);
    const seen = azureServer.requests[azureServer.requests.length - 1]!;
    expect(seen).toMatchObject({ path: '/v1/chat/completions', stream: true, completed: true });
  });

  it('falls back in the declared order on 5xx, 429 and connect errors before the first byte, streams included', async () => {
    const dead = {
      id: 'dead',
      kind: 'openai',
      baseUrl: 'http://127.0.0.1:1/v1',
      credential: 'unused',
      models: mapping('gpt-x'),
    };
    expect((await call('POST', '/v1/providers', acme.keys.admin, dead)).statusCode).toBe(201);
    await route('fallback', { stable: 'dead', fallbacks: ['oa', AZ] }, 'provider:oa');
    await faults(openaiServer, { errorRate: 1, errorStatus: 503 });
    expect(await servedBy('fallback')).toBe(`provider:${AZ}`);
    await faults(openaiServer, { errorRate: 1, errorStatus: 429 });
    expect(await servedBy('fallback')).toBe(`provider:${AZ}`);
    const streamed = await p.app.inject({
      method: 'POST',
      url: '/v1/chat/completions',
      headers: bearer(acme.keys.developer),
      payload: { model: 'fallback', stream: true, messages: [{ role: 'user', content: 'hi' }] },
    });
    answers.push(streamed.body);
    expect(streamed.headers['x-llmhub-model-version']).toBe(`provider:${AZ}`);
    expect(streamed.body).toContain('data: [DONE]');
    await faults(openaiServer, { errorRate: 0 });
    expect(await servedBy('fallback')).toBe('provider:oa');
  });
});

describe('routing strategies', () => {
  it('cost: the cheapest of the equivalent targets by the price table; latency: the lowest recent latency', async () => {
    await route('strategy', { stable: AZ, fallbacks: ['oa'] }, `provider:${AZ}`);
    // Unpriced, the declared order decides; then the prices usage is charged at (by version, as metered) decide.
    expect(await servedBy('strategy', { 'x-routing-strategy': 'cost' })).toBe(`provider:${AZ}`);
    const price = async (version: string, inputPerMillion: number, outputPerMillion: number) =>
      expect(
        (
          await call('PUT', '/v1/prices', acme.keys.admin, {
            model: 'strategy',
            version,
            currency: 'USD',
            inputPerMillion,
            outputPerMillion,
          })
        ).statusCode,
      ).toBe(200);
    await price('provider:oa', 1, 2);
    await price(`provider:${AZ}`, 10, 20);
    await eventually('cost to pick the cheaper provider, oa', async () => {
      return (await servedBy('strategy', { 'x-routing-strategy': 'cost' })) === 'provider:oa';
    });
    await price(`provider:${AZ}`, 0.1, 0.2);
    await eventually(`cost to pick ${AZ} once it is the cheaper`, async () => {
      return (await servedBy('strategy', { 'x-routing-strategy': 'cost' })) === `provider:${AZ}`;
    });

    await faults(azureServer, { latencyMs: 300 });
    // Three picks of oa in a row, which declared order (AZ first) or alternation never give. Not a fixed count of
    // calls: one oa answer slowed by a loaded machine past AZ's average rightly sends the next call back to AZ.
    const seen: unknown[] = [];
    await eventually('the latency strategy to settle on oa, the faster', async () => {
      seen.push(await servedBy('strategy', { 'x-routing-strategy': 'latency' }));
      return seen.slice(-3).join() === ['provider:oa', 'provider:oa', 'provider:oa'].join();
    });
    await faults(azureServer, { latencyMs: 0 });
  });
});

describe('provider canary analysis (POST /v1/deploy with a provider)', () => {
  const M = 'analysed';
  const FLAKY_KEY = `sk-flaky-${randomBytes(8).toString('hex')}`;
  let flakyServer: ReferenceModelServer;
  beforeAll(async () => {
    flakyServer = await startReferenceModelServer({
      name: 'flaky',
      provider: { shape: 'openai', apiKey: FLAKY_KEY, models: { 'gpt-f': 'gpt-f' } },
    });
    const flaky = {
      id: 'flaky',
      kind: 'openai',
      baseUrl: flakyServer.url,
      credential: FLAKY_KEY,
      models: mapping('gpt-f'),
    };
    expect((await call('POST', '/v1/providers', acme.keys.admin, flaky)).statusCode).toBe(201);
    await route(M, { stable: 'oa' }, 'provider:oa');
  });
  afterAll(() => flakyServer?.close());

  const strategy = {
    steps: [{ setWeight: 50 }, { analysis: {} }],
    analysis: { interval: '1s', minRequests: 5, failureLimit: 2, inconclusiveLimit: 50 },
  };
  /** Weighted traffic (no routing header) the whole time `during` runs: every answer, and who served it. */
  async function underTraffic<T>(during: () => Promise<T>): Promise<{ result: T; seen: [number, string][] }> {
    const seen: [number, string][] = [];
    let done = false;
    const client = (async () => {
      while (!done) {
        const res = await chat(M);
        seen.push([res.statusCode, String(res.headers['x-llmhub-model-version'])]);
      }
    })();
    try {
      return { result: await during(), seen };
    } finally {
      done = true;
      await client;
    }
  }

  it('refuses what a provider canary cannot be, naming the field', async () => {
    const api = rolloutClient(p, acme);
    for (const [body, status, field] of [
      [{ modelId: M, provider: 'oa' }, 409, 'body.provider'],
      [{ modelId: M, provider: 'nope' }, 404, 'body.provider'],
      [{ modelId: M, provider: 'flaky', version: 'v1' }, 400, 'body.version'],
      [{ modelId: M, provider: 'flaky', env: { A: 'b' } }, 400, 'body.env'],
      [{ modelId: M, provider: 'flaky', strategy: { readinessTimeout: '1m' } }, 400, 'body.strategy.readinessTimeout'],
      [{ modelId: M }, 400, 'body.cluster'],
    ] as const) {
      const res = await api.deploy(body, uniqueId('dep'), acme.keys.admin);
      expect([body, res.statusCode, res.json().error?.details?.field]).toEqual([body, status, field]);
    }
    // Provider routes are a tenant admin's: a developer may deploy versions, not canary a provider.
    const developer = await api.deploy({ modelId: M, provider: 'flaky' });
    expect([developer.statusCode, developer.json().error.details.field]).toEqual([403, 'body.provider']);
  });

  it('a healthy provider canary is analysed and promoted: it becomes the route stable', async () => {
    const api = rolloutClient(p, acme);
    const { result: done, seen } = await underTraffic(async () => {
      const res = await api.deploy({ modelId: M, provider: AZ, strategy }, uniqueId('dep'), acme.keys.admin);
      expect(res.statusCode).toBe(202);
      const deploymentId = res.json().deploymentId;
      // The rollout owns the provider route until it ends (its lock is taken before the 202): no edit in between.
      for (const edit of [
        await call('PUT', `/v1/provider-routes/${M}`, acme.keys.admin, { stable: 'oa' }),
        await call('DELETE', `/v1/provider-routes/${M}`, acme.keys.admin),
      ])
        expect([edit.statusCode, edit.json().error.details]).toEqual([409, { deploymentId }]);
      return api.untilPhase(deploymentId, 'promoted', 'rolled_back');
    });
    expect(done).toMatchObject({ phase: 'promoted', version: `provider:${AZ}`, weights: { stable: `provider:${AZ}` } });
    expect(done.analyses.at(-1)).toMatchObject({ phase: 'Successful', version: `provider:${AZ}` });
    expect(seen.filter(([status]) => status !== 200)).toEqual([]);
    expect(new Set(seen.map(([, v]) => v))).toEqual(new Set(['provider:oa', `provider:${AZ}`]));
    expect((await call('GET', `/v1/provider-routes/${M}`, acme.keys.admin)).json()).toMatchObject({
      stable: AZ,
      canary: null,
      canaryWeight: 0,
    });
    await eventually(`the gateway to serve ${M}'s stable from ${AZ}`, async () => {
      return (await servedBy(M, { 'x-routing-strategy': 'stable' })) === `provider:${AZ}`;
    });
  });

  it('a provider canary answering 500s is rolled back, the stable serving every request throughout', async () => {
    await faults(flakyServer, { errorRate: 1, errorStatus: 500 });
    const api = rolloutClient(p, acme);
    const { result: done, seen } = await underTraffic(async () => {
      const res = await api.deploy({ modelId: M, provider: 'flaky', strategy }, uniqueId('dep'), acme.keys.admin);
      expect(res.statusCode).toBe(202);
      return api.untilPhase(res.json().deploymentId, 'promoted', 'rolled_back');
    });
    expect(done).toMatchObject({
      phase: 'rolled_back',
      weights: { stable: `provider:${AZ}`, canary: null, canaryWeight: 0 },
      failureReason: expect.stringContaining('analysis failed'),
    });
    expect(done.analyses.slice(-2)).toMatchObject([
      { phase: 'Failed', version: 'provider:flaky' },
      { phase: 'Failed', version: 'provider:flaky' },
    ]);
    // The canary got its share (the provider saw the calls), and every caller was answered by the stable.
    expect(flakyServer.requests.length).toBeGreaterThan(0);
    expect(seen.length).toBeGreaterThan(0);
    expect(seen.filter(([status, v]) => status !== 200 || v !== `provider:${AZ}`)).toEqual([]);
    expect((await call('GET', `/v1/provider-routes/${M}`, acme.keys.admin)).json()).toMatchObject({
      stable: AZ,
      canary: null,
      canaryWeight: 0,
    });
  });
});

describe('credentials', () => {
  it('rotate without downtime: a new primary key, rewrap, the old key dropped, and the gateway still serves', async () => {
    // A budget webhook secret is sealed under the same keys and moves with them.
    const budget = { amount: 1000, currency: 'USD', webhookUrl: 'http://127.0.0.1:9/hook', webhookSecret: OPENAI_KEY };
    expect((await call('PUT', '/v1/budgets', acme.keys.admin, budget)).statusCode).toBe(200);
    const old = JSON.parse(await readFile(p.kekFile, 'utf8')) as { keys: Record<string, string> };
    await writeFile(p.kekFile, newKeyFile('k2', old.keys));
    const rewrapped = await call('POST', '/v1/platform/provider-credentials/rewrap', p.operatorKey);
    expect(rewrapped.statusCode).toBe(200);
    expect(rewrapped.json().rewrapped).toBeGreaterThanOrEqual(4);
    const rotated = JSON.parse(await readFile(p.kekFile, 'utf8')) as { keys: Record<string, string> };
    await writeFile(p.kekFile, JSON.stringify({ primary: 'k2', keys: { k2: rotated.keys.k2 } }));
    const { rows } = await p.db.query(
      "SELECT DISTINCT credential->>'kek' AS kek FROM providers WHERE tenant_id = $1 OR (tenant_id IS NULL AND id = $2)",
      [acme.id, AZ_ID],
    );
    expect(rows).toEqual([{ kek: 'k2' }]);
    const { rows: secrets } = await p.db.query(
      "SELECT webhook_secret->>'kek' AS kek FROM budgets WHERE tenant_id = $1",
      [acme.id],
    );
    expect(secrets).toEqual([{ kek: 'k2' }]);
    expect(await servedBy('strategy', { 'x-routing-strategy': 'stable' })).toBe(`provider:${AZ}`);
  });

  it('never appear in logs, audit rows, workflow histories or answers, nor their base64 or URL-encoded forms', async () => {
    await eventually('the audit rows of the calls', async () => {
      const { rows } = await p.db.query('SELECT count(*)::int AS n FROM audit_log WHERE at >= $1', [startedAt]);
      return rows[0].n > 10;
    });
    const { rows: audit } = await p.db.query('SELECT * FROM audit_log WHERE at >= $1', [startedAt]);
    const histories: string[] = [];
    for await (const w of p.temporal.workflow.list({ query: `StartTime >= '${startedAt.toISOString()}'` }))
      histories.push(JSON.stringify(await p.temporal.workflow.getHandle(w.workflowId, w.runId).fetchHistory()));
    const places = { logs: logged.join(''), audit: JSON.stringify(audit), histories: histories.join(''), answers };
    expect(places.logs.length).toBeGreaterThan(0);
    for (const [where, text] of Object.entries(places))
      for (const s of SECRETS) expect({ where, leaked: String(text).includes(s) }).toEqual({ where, leaked: false });
  });
});
