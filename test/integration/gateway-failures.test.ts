import { spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import OpenAI from 'openai';
import { GatewayMetricsStore } from '../../common/store/gateway-metrics';
import { freePort } from '../../deploy/dev/process';
import {
  startReferenceModelServer,
  type Faults,
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

/** Tight upstream timeouts and a quick breaker, so failures show within a test; normal answers take milliseconds. */
const SETTINGS = {
  firstByteTimeoutMs: 1_500,
  idleTimeoutMs: 1_500,
  breakerFailures: 3,
  breakerCooldownMs: 2_000,
  metricsFlushMs: 200,
  refreshMs: 500,
};
/**
 * Listens with a backlog of 0 and never accepts; its own non-blocking connects fill the accept queue (Linux keeps
 * backlog + 1), then it prints its port. Python, because Node accepts every connection it is offered.
 */
const FULL_ACCEPT_QUEUE = `
import socket, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(0)
fill = []
for _ in range(4):
    c = socket.socket(); c.setblocking(False); c.connect_ex(s.getsockname()); fill.append(c)
print(s.getsockname()[1], flush=True)
time.sleep(600)
`;
let p: TestPlatform;
let acme: TestTenant;
let baseURL: string;
const servers: ReferenceModelServer[] = [];

beforeAll(async () => {
  p = await startTestPlatform({ gateway: SETTINGS });
  baseURL = `${await p.app.listen({ host: '127.0.0.1', port: 0 })}/v1`;
  acme = await p.createTenant('acme');
});
afterAll(async () => {
  await p?.close();
  await Promise.all(servers.map((s) => s.close()));
});

/** A model of its own with a stable (and optionally a canary, reached only when pinned) reference server carrying the given faults. */
async function model(stableFaults: Partial<Faults>, canaryFaults?: Partial<Faults>) {
  const id = uniqueId('m');
  const stable = await startReferenceModelServer({ name: `${id}-stable`, faults: stableFaults });
  const canary = canaryFaults
    ? await startReferenceModelServer({ name: `${id}-canary`, faults: canaryFaults })
    : undefined;
  servers.push(stable, ...(canary ? [canary] : []));
  await serveModel(
    p.db,
    acme.id,
    id,
    { s: stable.url, ...(canary ? { c: canary.url } : {}) },
    { stable: 's', canary: canary ? 'c' : null, canaryWeight: 0 },
  );
  await untilRouted(p.app, acme.keys.developer, id);
  return { id, stable, canary };
}

const chat = (modelId: string, headers: Record<string, string> = {}, extra: object = {}) =>
  p.app.inject({
    method: 'POST',
    url: '/v1/chat/completions',
    headers: { ...bearer(acme.keys.developer), ...headers },
    payload: { model: modelId, messages: [{ role: 'user', content: 'hi' }], ...extra },
  });
const toCanary = { 'x-routing-strategy': 'canary' };

describe('upstream failures', () => {
  it('falls back to stable once when the canary fails before the first byte, and counts the failure against the canary', async () => {
    const since = Date.now();
    const m = await model({}, { errorRate: 1 });
    const res = await chat(m.id, toCanary);
    expect(res.statusCode).toBe(200);
    expect(res.headers['x-llmhub-model-version']).toBe('s');
    expect(res.json().system_fingerprint).toBe(`${m.id}-stable`);

    // A stream the canary cuts before its first event falls back too: the caller has not seen a byte.
    m.canary!.faults.errorRate = 0;
    m.canary!.faults.failAfterChunks = 0;
    const stream = await chat(m.id, toCanary, { stream: true });
    expect(stream.statusCode).toBe(200);
    expect(stream.headers['x-llmhub-model-version']).toBe('s');
    expect(stream.body.trimEnd().endsWith('data: [DONE]')).toBe(true);

    const stats = await eventually('the canary failures to reach the analysis', async () => {
      const s = await new GatewayMetricsStore(p.db).versionStats(acme.id, m.id, 'c', since);
      return s.errors === 2 && s;
    });
    expect(stats.successRate).toBeLessThan(1);
    expect(stats.errorClasses).toEqual({ upstream_5xx: 1, stream_broken: 1 });
  });

  it('a circuit breaker stops sending to a failing upstream and probes it back', async () => {
    const m = await model({}, { errorRate: 1 });
    const canary = m.canary!;
    await eventually('the breaker to open (a canary request no longer reaches the canary)', async () => {
      const before = canary.received();
      const res = await chat(m.id, toCanary);
      expect(res.statusCode).toBe(200);
      return canary.received() === before;
    });
    expect(canary.received()).toBeGreaterThanOrEqual(SETTINGS.breakerFailures);
    canary.faults.errorRate = 0;
    await eventually(
      'a probe to find the canary healthy again',
      async () => (await chat(m.id, toCanary)).headers['x-llmhub-model-version'] === 'c',
    );
    const after = canary.received();
    expect((await chat(m.id, toCanary)).headers['x-llmhub-model-version']).toBe('c');
    expect(canary.received()).toBe(after + 1);
  });

  it('answers 503 when the model server is down and 502 when it fails, with a clear message', async () => {
    const down = uniqueId('down');
    await serveModel(p.db, acme.id, down, { s: `http://127.0.0.1:${await freePort()}/v1` }, { stable: 's' });
    await eventually('the route', async () => (await chat(down)).statusCode !== 404);
    const res = await chat(down);
    expect(res.statusCode).toBe(503);
    expect(res.json().error).toMatchObject({
      type: 'api_error',
      code: 'connect',
      message: expect.stringContaining('unreachable'),
    });

    const failing = await model({ errorRate: 1 });
    const bad = await chat(failing.id);
    expect(bad.statusCode).toBe(502);
    expect(bad.json().error).toMatchObject({
      type: 'api_error',
      code: 'upstream_5xx',
      message: expect.stringContaining('answered 500'),
    });
  });

  it('times out connecting (504) to a model server that never takes the connection', async () => {
    // A listener whose accept queue is full: the kernel drops further SYNs, so a connect hangs as it would to a
    // host that vanished. The first-byte timeout is shorter, so an accepted connection could not pass as this.
    const blackhole = spawn('python3', ['-c', FULL_ACCEPT_QUEUE], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      const port = await new Promise<number>((resolve, reject) => {
        blackhole.stdout.once('data', (d: Buffer) => resolve(Number(d.toString().trim())));
        blackhole.once('exit', (code) => reject(new Error(`the blackhole listener exited (${code})`)));
      });
      const id = uniqueId('blackhole');
      await serveModel(p.db, acme.id, id, { s: `http://127.0.0.1:${port}/v1` }, { stable: 's' });
      await untilRouted(p.app, acme.keys.developer, id);
      const res = await chat(id);
      expect(res.statusCode).toBe(504);
      expect(res.json().error).toMatchObject({
        type: 'api_error',
        code: 'timeout_connect',
        message: expect.stringContaining('connecting'),
      });
    } finally {
      blackhole.kill('SIGKILL');
    }
  });

  it('times out waiting for the first byte (504) and cancels the upstream request', async () => {
    const m = await model({ latencyMs: 600_000 });
    const res = await chat(m.id, { 'x-trace-id': 'first-byte-timeout' });
    expect(res.statusCode).toBe(504);
    expect(res.json().error).toMatchObject({ code: 'timeout_first_byte' });
    await eventually('the model server to see the cancel', async () =>
      m.stable.requests.find((r) => r.headers['x-trace-id'] === 'first-byte-timeout' && r.aborted),
    );
  });

  it('a client that gives up on a non-streamed call cancels the upstream request', async () => {
    const m = await model({ latencyMs: 600_000 });
    const traceId = uniqueId('gave-up');
    const ac = new AbortController();
    const sentAt = Date.now();
    const call = fetch(`${baseURL}/chat/completions`, {
      method: 'POST',
      headers: { ...bearer(acme.keys.developer), 'content-type': 'application/json', 'x-trace-id': traceId },
      body: JSON.stringify({ model: m.id, messages: [{ role: 'user', content: 'hi' }] }),
      signal: ac.signal,
    });
    await eventually('the model server to get the call', async () =>
      m.stable.requests.find((r) => r.headers['x-trace-id'] === traceId),
    );
    ac.abort();
    await expect(call).rejects.toThrow();
    const upstream = await eventually('the model server to see the cancel', async () =>
      m.stable.requests.find((r) => r.headers['x-trace-id'] === traceId && r.aborted),
    );
    expect(upstream.completed).toBe(false);
    // The caller's cancel, not the first-byte timeout that would end it later anyway.
    expect(Date.now() - sentAt).toBeLessThan(SETTINGS.firstByteTimeoutMs);
  });

  it('ends a stream with an error event when the upstream goes silent or breaks mid-stream', async () => {
    const silent = await model({ tokenIntervalMs: 600_000 });
    // Paced, so the chunks reach the gateway before the break (a socket dropped with unread data loses that data).
    const broken = await model({ failAfterChunks: 3, tokenIntervalMs: 50 });
    const client = new OpenAI({ apiKey: acme.keys.developer, baseURL, maxRetries: 0 });
    for (const [m, reason] of [
      [silent, 'idle timeout'],
      [broken, 'closed the connection mid-response'],
    ] as const) {
      const stream = await client.chat.completions.create({
        model: m.id,
        messages: [{ role: 'user', content: 'one two three four five' }],
        stream: true,
      });
      const received: unknown[] = [];
      const failure = await (async () => {
        try {
          for await (const chunk of stream) received.push(chunk);
        } catch (err) {
          return err;
        }
      })();
      expect(received.length).toBeGreaterThan(0);
      expect(failure).toBeInstanceOf(OpenAI.APIError);
      expect((failure as Error).message).toContain(reason);
    }
    const raw = await chat(broken.id, {}, { stream: true });
    expect(raw.body).toMatch(
      /data: \{"error":\{"message":"the model server's stream broke off[^"]*","type":"api_error","param":null,"code":"upstream_stream_error"\}\}\n\n$/,
    );
    expect(raw.body).not.toContain('[DONE]');
  });
});
