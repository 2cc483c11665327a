import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import OpenAI from 'openai';
import { abBucket } from '../../api/gateway/route-table';
import { GatewayMetricsStore } from '../../common/store/gateway-metrics';
import { RoutingStore } from '../../common/store/routing';
import { UsageStore } from '../../common/store/usage';
import {
  countTokens,
  embed,
  startReferenceModelServer,
  type ReferenceModelServer,
} from '../../deploy/dev/model-server/server';
import { serveModel, untilRouted } from '../support/gateway';
import {
  bearer,
  eventually,
  startTestPlatform,
  uniqueId,
  type TestPlatform,
  type TestTenant,
} from '../support/platform';

const BODY_LIMIT = 64 * 1024;
let p: TestPlatform;
let acme: TestTenant;
let other: TestTenant;
let stable: ReferenceModelServer;
let canary: ReferenceModelServer;
let slow: ReferenceModelServer;
let bulk: ReferenceModelServer;
let baseURL: string;
const MODEL = uniqueId('chat');
const SLOW_MODEL = uniqueId('slow');
const BULK_MODEL = uniqueId('bulk');

beforeAll(async () => {
  p = await startTestPlatform({ gateway: { bodyLimitBytes: BODY_LIMIT, refreshMs: 500, metricsFlushMs: 200 } });
  const address = await p.app.listen({ host: '127.0.0.1', port: 0 });
  baseURL = `${address}/v1`;
  [stable, canary, slow, bulk] = await Promise.all([
    startReferenceModelServer({ name: 'stable' }),
    startReferenceModelServer({ name: 'canary' }),
    // Long enough streams that a test can act while the upstream is still sending.
    startReferenceModelServer({ name: 'slow', faults: { replyTokens: 20, tokenIntervalMs: 100 } }),
    // Megabytes of stream as fast as it can send, more than a client that is not reading takes in.
    startReferenceModelServer({ name: 'bulk', faults: { replyTokens: 20_000 } }),
  ]);
  acme = await p.createTenant('acme');
  other = await p.createTenant('other');
  await serveModel(p.db, acme.id, MODEL, { '1.0': stable.url, '2.0': canary.url }, { stable: '1.0', canary: '2.0' });
  await serveModel(p.db, acme.id, SLOW_MODEL, { '1.0': slow.url }, { stable: '1.0' });
  await untilRouted(p.app, acme.keys.developer, MODEL);
  await serveModel(p.db, acme.id, BULK_MODEL, { '1.0': bulk.url }, { stable: '1.0' });
  await untilRouted(p.app, acme.keys.developer, SLOW_MODEL);
  await untilRouted(p.app, acme.keys.developer, BULK_MODEL);
});
afterAll(async () => {
  await p?.close();
  await Promise.all([stable, canary, slow, bulk].map((s) => s?.close()));
});

const client = (key: string, headers: Record<string, string> = {}) =>
  new OpenAI({ apiKey: key, baseURL, defaultHeaders: headers, maxRetries: 0 });
const post = (url: string, key: string | undefined, payload: unknown, headers: Record<string, string> = {}) =>
  p.app.inject({
    method: 'POST',
    url,
    headers: { ...(key ? bearer(key) : {}), ...headers },
    payload: payload as object,
  });

/** A stream on the slow model, after its first chunk arrived (the upstream has most of it still to send). */
async function slowStreamStarted(traceId: string) {
  const stream = await client(acme.keys.developer, { 'x-trace-id': traceId }).chat.completions.create({
    model: SLOW_MODEL,
    messages: [{ role: 'user', content: 'go' }],
    stream: true,
  });
  const it = stream[Symbol.asyncIterator]();
  await it.next();
  return { stream, it };
}

describe('OpenAI-compatible endpoints, with the official openai client', () => {
  const pinned = { 'x-routing-strategy': 'stable' };

  it('answers a chat completion', async () => {
    const res = await client(acme.keys.developer, pinned).chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: 'hello there' }],
    });
    expect(res.choices[0]!.message.content).toBe('Reference reply to: hello there');
    expect(res.choices[0]!.finish_reason).toBe('stop');
    expect(res.system_fingerprint).toBe('stable');
    expect(res.usage).toEqual({ prompt_tokens: 3, completion_tokens: 5, total_tokens: 8 });
  });

  it('streams a chat completion chunk by chunk, ending with [DONE]', async () => {
    const stream = await client(acme.keys.developer, pinned).chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: 'count one two three' }],
      stream: true,
      stream_options: { include_usage: true },
    });
    const deltas: string[] = [];
    let finish: string | null = null;
    let usage: unknown;
    for await (const chunk of stream) {
      if (chunk.choices[0]?.delta.content) deltas.push(chunk.choices[0].delta.content);
      finish = chunk.choices[0]?.finish_reason ?? finish;
      usage = chunk.usage ?? usage;
    }
    expect(deltas).toEqual(['Reference', ' reply', ' to:', ' count', ' one', ' two', ' three']);
    expect(finish).toBe('stop');
    expect(usage).toEqual({ prompt_tokens: 5, completion_tokens: 7, total_tokens: 12 });
  });

  it('forwards each chunk as it comes: the client has the first while the upstream is still sending', async () => {
    const traceId = uniqueId('trace');
    const { it } = await slowStreamStarted(traceId);
    const upstream = slow.requests.find((r) => r.headers['x-trace-id'] === traceId);
    expect(upstream).toMatchObject({ stream: true, completed: false });
    let rest = 0;
    while (!(await it.next()).done) rest++;
    expect(rest).toBeGreaterThan(15);
  });

  it('a client slower than the model server still gets the whole stream, in order', async () => {
    const traceId = uniqueId('bulk');
    const payload = JSON.stringify({
      model: BULK_MODEL,
      stream: true,
      messages: [{ role: 'user', content: 'a long one' }],
    });
    const res = await fetch(`${baseURL}/chat/completions`, {
      method: 'POST',
      headers: { ...bearer(acme.keys.developer), 'content-type': 'application/json', 'x-trace-id': traceId },
      body: payload,
    });
    expect(res.status).toBe(200);
    // Not reading yet: the model server keeps sending, so the gateway has to hold it back, then let it go on.
    await eventually('the model server to be streaming', async () =>
      bulk.requests.some((r) => r.headers['x-trace-id'] === traceId),
    );
    const viaGateway = contentOf(await res.text());
    const direct = await fetch(`${bulk.url}/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: payload,
    });
    const expected = contentOf(await direct.text());
    expect(expected.events).toBe(20_002);
    expect(viaGateway).toEqual(expected);
  });

  it('answers text completions and embeddings', async () => {
    const c = client(acme.keys.developer, pinned);
    const completion = await c.completions.create({ model: MODEL, prompt: 'say hi', max_tokens: 2 });
    expect(completion.choices[0]).toMatchObject({ text: 'Reference completion', finish_reason: 'length' });
    const emb = await c.embeddings.create({ model: MODEL, input: ['alpha', 'beta'] });
    expect(emb.data).toHaveLength(2);
    const expected = embed('beta', 16);
    emb.data[1]!.embedding.forEach((v, i) => expect(v).toBeCloseTo(expected[i]!, 5));
    expect(emb.usage.prompt_tokens).toBe(countTokens('alpha') + countTokens('beta'));
  });

  it('lists the tenant models in the OpenAI list shape', async () => {
    const ids = [];
    for await (const m of client(acme.keys.viewer).models.list()) ids.push(m.id);
    expect(ids).toEqual(expect.arrayContaining([MODEL, SLOW_MODEL]));
  });

  it('passes tool-call deltas through intact, streamed and not', async () => {
    const c = client(acme.keys.developer, pinned);
    const tools = [
      {
        type: 'function' as const,
        function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } },
      },
    ];
    const messages = [{ role: 'user' as const, content: '/tool get_weather {"city":"Paris","unit":"celsius"}' }];
    const stream = await c.chat.completions.create({ model: MODEL, messages, tools, stream: true });
    const pieces: string[] = [];
    let name = '';
    let id = '';
    let finish: string | null = null;
    for await (const chunk of stream) {
      for (const call of chunk.choices[0]?.delta.tool_calls ?? []) {
        name += call.function?.name ?? '';
        id += call.id ?? '';
        if (call.function?.arguments) pieces.push(call.function.arguments);
      }
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    expect(pieces.length).toBeGreaterThan(1);
    expect(JSON.parse(pieces.join(''))).toEqual({ city: 'Paris', unit: 'celsius' });
    expect(name).toBe('get_weather');
    expect(finish).toBe('tool_calls');

    const whole = await c.chat.completions.create({ model: MODEL, messages, tools });
    expect(whole.choices[0]!.message.tool_calls).toEqual([
      {
        id: expect.stringMatching(/^call_/),
        type: 'function',
        function: { name: 'get_weather', arguments: pieces.join('') },
      },
    ]);
    expect(id).toMatch(/^call_/);
  });
});

describe('routing', () => {
  it('splits 10,000 weighted requests 90/10 within 2 percentage points', async () => {
    const model = uniqueId('weighted');
    const [s, c] = await Promise.all([
      startReferenceModelServer({ name: 's' }),
      startReferenceModelServer({ name: 'c' }),
    ]);
    try {
      await serveModel(p.db, acme.id, model, { a: s.url, b: c.url }, { stable: 'a', canary: 'b', canaryWeight: 10 });
      await untilRouted(p.app, acme.keys.developer, model);
      const before = { s: s.received(), c: c.received() };
      const N = 10_000;
      let next = 0;
      const headerCounts: Record<string, number> = {};
      await Promise.all(
        Array.from({ length: 32 }, async () => {
          while (next++ < N) {
            const res = await post('/v1/embeddings', acme.keys.developer, { model, input: 'x' });
            expect(res.statusCode).toBe(200);
            const v = String(res.headers['x-llmhub-model-version']);
            headerCounts[v] = (headerCounts[v] ?? 0) + 1;
          }
        }),
      );
      const toCanary = c.received() - before.c;
      expect(s.received() - before.s + toCanary).toBe(N);
      expect(Math.abs((toCanary / N) * 100 - 10)).toBeLessThanOrEqual(2);
      expect(headerCounts).toEqual({ a: N - toCanary, b: toCanary });
    } finally {
      await Promise.all([s.close(), c.close()]);
    }
  });

  it('x-routing-strategy pins stable or canary; ab_test is sticky per user', async () => {
    const versions = async (n: number, headers: Record<string, string>, user?: string) => {
      const out = new Set<string>();
      for (let i = 0; i < n; i++) {
        const res = await post(
          '/v1/embeddings',
          acme.keys.developer,
          { model: MODEL, input: 'x', ...(user ? { user } : {}) },
          headers,
        );
        expect(res.statusCode).toBe(200);
        out.add(String(res.headers['x-llmhub-model-version']));
      }
      return [...out];
    };
    expect(await versions(30, { 'x-routing-strategy': 'canary' })).toEqual(['2.0']);
    expect(await versions(30, { 'x-routing-strategy': 'stable' })).toEqual(['1.0']);
    const users = Array.from({ length: 40 }, (_, i) => `user-${i}`);
    const seen = new Set<string>();
    for (const user of users) {
      const v = await versions(3, { 'x-routing-strategy': 'ab_test' }, user);
      expect(v).toEqual([abBucket(user) < 10 ? '2.0' : '1.0']);
      seen.add(v[0]!);
    }
    expect(seen).toEqual(new Set(['1.0', '2.0']));
    const bad = await post(
      '/v1/embeddings',
      acme.keys.developer,
      { model: MODEL, input: 'x' },
      { 'x-routing-strategy': 'random' },
    );
    expect(bad.statusCode).toBe(400);
    expect(bad.json().error).toMatchObject({
      type: 'invalid_request_error',
      param: 'headers.x-routing-strategy',
      code: 'invalid_request',
    });
  });

  it('applies a weight change without restart', async () => {
    const model = uniqueId('shift');
    await serveModel(
      p.db,
      acme.id,
      model,
      { a: stable.url, b: canary.url },
      { stable: 'a', canary: 'b', canaryWeight: 0 },
    );
    await untilRouted(p.app, acme.keys.developer, model);
    await new RoutingStore(p.db).setRoute(acme.id, model, { stable: 'a', canary: 'b', canaryWeight: 100 });
    await eventually('the new weight to apply', async () => {
      const res = await post('/v1/embeddings', acme.keys.developer, { model, input: 'x' });
      return res.headers['x-llmhub-model-version'] === 'b';
    });
  });
});

describe('tenancy, keys and request errors', () => {
  const chat = { model: MODEL, messages: [{ role: 'user', content: 'hi' }] };

  it('echoes the trace id and propagates it with tenant and project upstream', async () => {
    const project = uniqueId('proj');
    await new RoutingStore(p.db).createProject(acme.id, project);
    const res = await eventually('the project to be known', async () => {
      const r = await post('/v1/chat/completions', acme.keys.developer, chat, {
        'x-trace-id': 'trace-given-1',
        'x-project-id': project,
        'x-routing-strategy': 'stable',
      });
      return r.statusCode === 200 && r;
    });
    expect(res.headers['x-trace-id']).toBe('trace-given-1');
    const seen = stable.requests.find((r) => r.headers['x-trace-id'] === 'trace-given-1');
    expect(seen?.headers).toMatchObject({ 'x-tenant-id': acme.id, 'x-project-id': project });

    const generated = await post('/v1/chat/completions', acme.keys.developer, chat, { 'x-routing-strategy': 'stable' });
    const id = String(generated.headers['x-trace-id']);
    expect(id).toMatch(/^[0-9a-f-]{36}$/);
    expect(stable.requests.find((r) => r.headers['x-trace-id'] === id)).toBeDefined();
  });

  it('says nosniff on answers it writes itself (whole and streamed) as on its errors', async () => {
    const answers = [
      await post('/v1/chat/completions', acme.keys.developer, chat),
      await post('/v1/chat/completions', acme.keys.developer, { ...chat, stream: true }),
      await post('/v1/chat/completions', acme.keys.developer, { ...chat, model: 'no-such-model' }),
    ];
    expect(answers.map((r) => [r.statusCode, r.headers['content-type'], r.headers['x-content-type-options']])).toEqual([
      [200, expect.stringMatching(/^application\/json/), 'nosniff'],
      [200, 'text/event-stream', 'nosniff'],
      [404, expect.stringMatching(/^application\/json/), 'nosniff'],
    ]);
  });

  it('refuses another tenant (403), a foreign project (403), no key (401), a viewer key (403)', async () => {
    const asOther = await post('/v1/chat/completions', acme.keys.developer, chat, { 'x-tenant-id': other.id });
    expect(asOther.statusCode).toBe(403);
    expect(asOther.json().error).toMatchObject({
      type: 'permission_error',
      code: 'forbidden',
      message: expect.stringContaining(other.id),
    });
    const theirProject = uniqueId('theirs');
    await new RoutingStore(p.db).createProject(other.id, theirProject);
    const foreign = await post('/v1/chat/completions', acme.keys.developer, chat, { 'x-project-id': theirProject });
    expect(foreign.statusCode).toBe(403);
    const none = await post('/v1/chat/completions', undefined, chat);
    expect(none.statusCode).toBe(401);
    expect(none.json().error).toMatchObject({ type: 'authentication_error', code: 'unauthorized', param: null });
    expect((await post('/v1/chat/completions', acme.keys.viewer, chat)).statusCode).toBe(403);
    await expect(
      client('llmhub_0000000000000000_' + 'x'.repeat(43)).chat.completions.create({
        model: MODEL,
        messages: [{ role: 'user', content: 'hi' }],
      }),
    ).rejects.toBeInstanceOf(OpenAI.AuthenticationError);
  });

  it('answers malformed JSON (400), a body over the cap (413) and an unknown model (404) in the OpenAI shape', async () => {
    const bad = await p.app.inject({
      method: 'POST',
      url: '/v1/chat/completions',
      headers: { ...bearer(acme.keys.developer), 'content-type': 'application/json' },
      payload: '{"model": ',
    });
    expect(bad.statusCode).toBe(400);
    expect(bad.json()).toEqual({
      error: {
        message: expect.stringContaining('not valid JSON'),
        type: 'invalid_request_error',
        param: null,
        code: 'invalid_request',
      },
    });
    const big = await post('/v1/chat/completions', acme.keys.developer, {
      model: MODEL,
      messages: [{ role: 'user', content: 'x'.repeat(BODY_LIMIT) }],
    });
    expect(big.statusCode).toBe(413);
    expect(big.json().error.type).toBe('invalid_request_error');
    const missing = await post('/v1/chat/completions', acme.keys.developer, {
      model: 'no-such-model',
      messages: [{ role: 'user', content: 'hi' }],
    });
    expect(missing.statusCode).toBe(404);
    expect(missing.json().error).toMatchObject({ code: 'model_not_found', param: 'model' });
    const noMessages = await post('/v1/chat/completions', acme.keys.developer, { model: MODEL });
    expect(noMessages.statusCode).toBe(400);
    expect(noMessages.json().error.param).toBe('messages');
  });

  it('a client that disconnects mid-stream aborts the upstream request', async () => {
    const traceId = uniqueId('abort');
    const { stream } = await slowStreamStarted(traceId);
    stream.controller.abort();
    const upstream = await eventually('the reference server to see the connection close', async () =>
      slow.requests.find((r) => r.headers['x-trace-id'] === traceId && r.aborted),
    );
    expect(upstream.completed).toBe(false);
  });
});

describe('metering and metrics', () => {
  it('meters usage per tenant/project/model/version and exposes per-version metrics to platform operators only', async () => {
    const tenant = await p.createTenant('metered');
    const model = uniqueId('metered');
    const since = Date.now();
    await serveModel(p.db, tenant.id, model, { v1: stable.url }, { stable: 'v1' });
    await untilRouted(p.app, tenant.keys.developer, model);
    const c = client(tenant.keys.developer);
    let prompt = 0;
    let completion = 0;
    for (const content of ['one', 'two words', 'three more words']) {
      const r = await c.chat.completions.create({ model, messages: [{ role: 'user', content }] });
      prompt += r.usage!.prompt_tokens;
      completion += r.usage!.completion_tokens;
    }
    // Without include_usage the gateway counts the stream's chunks: one per word here, plus role and finish chunks.
    const stream = await c.chat.completions.create({
      model,
      messages: [{ role: 'user', content: 'a b' }],
      stream: true,
    });
    let streamed = 0;
    for await (const chunk of stream) if (chunk.choices[0]?.delta.content) streamed++;
    const usage = new UsageStore(p.db);
    const totals = await eventually('usage to be flushed', async () => {
      const t = await usage.totals(tenant.id);
      return t[0]?.requests === 5 && t; // 4 calls + the untilRouted probe
    });
    expect(totals).toHaveLength(1);
    expect(totals[0]).toMatchObject({ projectId: 'default', modelId: model, version: 'v1' });
    expect(totals[0]!.completionTokens).toBe(completion + streamed + 2);
    // The stream's prompt is the gateway's estimate (body bytes / 4), an over-estimate; the probe's 'ping' is one token.
    expect(totals[0]!.promptTokens).toBeGreaterThan(prompt + 1);

    const stats = await eventually('metrics to be flushed', async () => {
      const s = await new GatewayMetricsStore(p.db).versionStats(tenant.id, model, 'v1', since);
      return s.requests === 5 && s; // with the untilRouted probe
    });
    expect(stats).toMatchObject({ errors: 0, successRate: 1, p95LatencyMs: expect.any(Number) });
    // Every tenant's models are in the metrics: only a platform operator reads them.
    for (const key of [undefined, tenant.keys.admin]) {
      const refused = await p.app.inject({ method: 'GET', url: '/metrics', headers: key ? bearer(key) : {} });
      expect(refused.statusCode).toBe(key ? 403 : 401);
      expect(refused.body).not.toContain(model);
    }
    const metrics = await p.app.inject({ method: 'GET', url: '/metrics', headers: bearer(p.operatorKey) });
    expect(metrics.statusCode).toBe(200);
    expect(metrics.body).toContain(
      `llmhub_gateway_requests_total{tenant="${tenant.id}",model="${model}",version="v1",status="200"} 5`,
    );
    expect(metrics.body).toMatch(
      new RegExp(
        `llmhub_gateway_time_to_first_token_seconds_count\\{tenant="${tenant.id}",model="${model}",version="v1"\\} 1`,
      ),
    );
  });
});

/** The data events of an SSE chat stream: how many, the text of their deltas, and whether it ended with [DONE]. */
function contentOf(sse: string): { events: number; text: string; done: boolean } {
  const data = sse
    .split('\n\n')
    .filter((e) => e.startsWith('data: '))
    .map((e) => e.slice('data: '.length));
  const done = data.at(-1) === '[DONE]';
  const events = data
    .filter((d) => d !== '[DONE]')
    .map((d) => JSON.parse(d) as { choices: { delta: { content?: string } }[] });
  return { events: events.length, text: events.map((e) => e.choices[0]?.delta.content ?? '').join(''), done };
}
