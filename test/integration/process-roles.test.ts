import { spawn, type ChildProcess } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { Client } from 'pg';
import { startReferenceModelServer, type ReferenceModelServer } from '../../deploy/dev/model-server/server';
import { freePort } from '../../deploy/dev/process';
import { serveModel } from '../support/gateway';
import { GATEWAY_MUST_NOT_LOAD, GATEWAY_NEEDS, loadedModules, recordModules } from '../support/gateway-modules';
import {
  bearer,
  eventually,
  startTestPlatform,
  uniqueId,
  type TestPlatform,
  type TestTenant,
} from '../support/platform';

/**
 * The gateway role (`roles/gateway.ts`) as its own process: inference, /v1/models, health and operator-only metrics,
 * none of the control routes, and none of the modules they need (the process reports every module it loaded). And
 * the migration command the chart's hook Job runs, against an empty database.
 */
const ROOT = path.resolve(__dirname, '..', '..');
const MODULE_LIST = path.join(process.env.LLMHUB_TEST_DATA!, `${uniqueId('gateway-modules')}.txt`);

let p: TestPlatform;
let acme: TestTenant;
let upstream: ReferenceModelServer;
let gateway: ChildProcess;
let exited: Promise<number | null>;
let output = '';
let url: string;
const MODEL = uniqueId('chat');
type ChatAnswer = { choices: { message: { content: string } }[] };

beforeAll(async () => {
  [p, upstream] = await Promise.all([
    startTestPlatform({ worker: false }),
    startReferenceModelServer({ name: 'roles' }),
  ]);
  acme = await p.createTenant('roles');
  await serveModel(p.db, acme.id, MODEL, { '1': upstream.url }, { stable: '1' });
  const port = await freePort();
  url = `http://127.0.0.1:${port}`;
  gateway = spawn(process.execPath, [...recordModules(MODULE_LIST).args, '--import', 'tsx', 'roles/gateway.ts'], {
    cwd: ROOT,
    env: {
      ...process.env,
      NODE_OPTIONS: '',
      API_PORT: String(port),
      LOG_LEVEL: 'warn',
      ...recordModules(MODULE_LIST).env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  gateway.stdout!.on('data', (d) => (output += d));
  gateway.stderr!.on('data', (d) => (output += d));
  exited = new Promise((resolve) => gateway.on('exit', resolve));
  await eventually('the gateway role to listen', () =>
    fetch(`${url}/healthz`).then(
      (r) => r.ok,
      () => false,
    ),
  );
});
afterAll(async () => {
  if (gateway?.exitCode === null) gateway.kill('SIGTERM');
  await upstream?.close();
  await p?.close();
});

const call = (method: string, route: string, key?: string, body?: unknown) =>
  fetch(`${url}${route}`, {
    method,
    headers: { ...(key ? bearer(key) : {}), ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });

describe('the gateway role', () => {
  it('serves inference, the model list, health and operator metrics, and no control route', async () => {
    // Ready on PostgreSQL alone: the gateway has no Temporal connection to check.
    const ready = await call('GET', '/readyz');
    expect({ status: ready.status, body: await ready.json() }).toEqual({
      status: 200,
      body: { status: 'ready', checks: { database: 'ok' } },
    });

    const chat = await eventually('the gateway role to route the model', async () => {
      const res = await call('POST', '/v1/chat/completions', acme.keys.developer, {
        model: MODEL,
        messages: [{ role: 'user', content: 'hello' }],
      });
      return res.status === 200 ? res : undefined;
    });
    expect(chat.headers.get('x-llmhub-model-version')).toBe('1');
    expect(((await chat.json()) as ChatAnswer).choices[0]!.message.content).toEqual(expect.any(String));
    expect(upstream.requests.some((r) => r.path === '/v1/chat/completions')).toBe(true);
    const embeddings = await call('POST', '/v1/embeddings', acme.keys.developer, { model: MODEL, input: 'hi' });
    expect(embeddings.status).toBe(200);

    const models = await call('GET', '/v1/models', acme.keys.viewer);
    expect(models.status).toBe(200);
    expect(((await models.json()) as { data: unknown[] }).data).toEqual([
      expect.objectContaining({ id: MODEL, object: 'model' }),
    ]);

    expect((await call('GET', '/metrics', acme.keys.admin)).status).toBe(403);
    const metrics = await call('GET', '/metrics', p.operatorKey);
    expect(metrics.status).toBe(200);
    expect(await metrics.text()).toContain(`llmhub_gateway_requests_total{tenant="${acme.id}"`);

    // Each of these is a route of the api role (the in-process app answers it); the gateway has none of them.
    const control: [string, string, string, unknown?][] = [
      ['GET', `/v1/models/${MODEL}`, acme.keys.viewer],
      ['GET', `/v1/models/${MODEL}/versions`, acme.keys.viewer],
      ['GET', '/v1/knowledge', acme.keys.viewer],
      ['POST', '/v1/deploy', acme.keys.admin, {}],
      ['GET', '/v1/fine-tunes', acme.keys.viewer],
      ['GET', '/v1/audit', acme.keys.admin],
      ['GET', '/v1/platform/tenants', p.operatorKey],
      ['GET', '/openapi.json', acme.keys.viewer],
    ];
    for (const [method, route, key, body] of control) {
      const onApi = await p.app.inject({
        method: method as 'GET',
        url: route,
        headers: bearer(key),
        payload: body as object,
      });
      expect({ route, api: onApi.statusCode === 404 ? onApi.body : 'served' }).toEqual({ route, api: 'served' });
      const res = await call(method, route, key, body);
      expect({ route, status: res.status, body: await res.json() }).toEqual({
        route,
        status: 404,
        body: { error: expect.objectContaining({ message: `no route for ${method} ${route}` }) },
      });
    }
  });

  it('loads none of the control routes’ modules, and stops cleanly on SIGTERM', async () => {
    gateway.kill('SIGTERM');
    expect({ code: await exited, output }).toEqual({ code: 0, output });
    const loaded = await loadedModules(MODULE_LIST);
    // The list is the process's own: it holds the gateway and its dependencies.
    for (const needed of GATEWAY_NEEDS)
      expect({ needed, loaded: loaded.some((m) => needed.test(m)) }).toEqual({ needed, loaded: true });
    expect(loaded.filter((m) => GATEWAY_MUST_NOT_LOAD.some((f) => f.test(m)))).toEqual([]);
  });
});

describe('the migration command', () => {
  it('applies every migration to an empty database and exits; a second run applies none', async () => {
    const database = uniqueId('migrate').replace(/-/g, '_');
    const admin = new Client({ connectionString: process.env.DATABASE_URL });
    await admin.connect();
    await admin.query(`CREATE DATABASE ${database}`);
    try {
      const target = new URL(process.env.DATABASE_URL!);
      target.pathname = `/${database}`;
      const migrate = () =>
        new Promise<{ code: number | null; output: string }>((resolve) => {
          const child = spawn(process.execPath, ['--import', 'tsx', 'common/store/migrate-cli.ts'], {
            cwd: ROOT,
            env: { ...process.env, NODE_OPTIONS: '', LOG_LEVEL: 'info', DATABASE_URL: target.toString() },
            stdio: ['ignore', 'pipe', 'pipe'],
          });
          let out = '';
          child.stdout.on('data', (d) => (out += d));
          child.stderr.on('data', (d) => (out += d));
          child.on('close', (code) => resolve({ code, output: out }));
        });
      const files = (await readdir(path.join(ROOT, 'common/store/migrations'))).filter((f) => f.endsWith('.sql'));
      const first = await migrate();
      expect(first.code).toBe(0);
      expect(JSON.parse(first.output.trim().split('\n').pop()!)).toMatchObject({ applied: files.sort() });
      const second = await migrate();
      expect(second.code).toBe(0);
      expect(JSON.parse(second.output.trim().split('\n').pop()!)).toMatchObject({
        applied: [],
        alreadyApplied: files.length,
      });
    } finally {
      await admin.query(`DROP DATABASE ${database} WITH (FORCE)`);
      await admin.end();
    }
  });
});
