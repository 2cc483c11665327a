import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { AuditStore } from '../../common/store/audit';
import { RolloutLockStore } from '../../common/store/rollouts';
import { startReferenceModelServer, type ReferenceModelServer } from '../../deploy/dev/model-server/server';
import { serveModel, untilRouted } from '../support/gateway';
import {
  bearer,
  eventually,
  startTestPlatform,
  uniqueId,
  type TestPlatform,
  type TestTenant,
} from '../support/platform';

let p: TestPlatform;
let acme: TestTenant;
let other: TestTenant;
let one: ReferenceModelServer;
let two: ReferenceModelServer;
const MODEL = uniqueId('admin-chat');
// Far longer than the test: a window boundary never refills an allowance mid-test.
const FOREVER_S = 2_000_000_000;
// Bound of a change reaching the gateway: at once by NOTIFY, else GATEWAY_REFRESH_MS / GATEWAY_KEY_CACHE_TTL_MS; the deadline is slack for a loaded machine.
const PROPAGATION_DEADLINE_MS = 30_000;

beforeAll(async () => {
  p = await startTestPlatform({ gateway: { refreshMs: 500 } });
  [one, two] = await Promise.all([
    startReferenceModelServer({ name: 'one' }),
    startReferenceModelServer({ name: 'two' }),
  ]);
  acme = await p.createTenant('acme');
  other = await p.createTenant('other');
  await serveModel(p.db, acme.id, MODEL, { '1.0': one.url, '2.0': two.url, '3.0': two.url }, { stable: '1.0' });
  for (const v of ['1.0', '2.0'])
    await p.registry.markVersionReady(acme.id, MODEL, v, { sizeBytes: 1, checksum: 'x', etag: null });
  // The gateway learns of the route by NOTIFY or its next refresh; the first test chats at once.
  await untilRouted(p.app, acme.keys.developer, MODEL);
});
afterAll(async () => {
  await p?.close();
  await Promise.all([one, two].map((s) => s?.close()));
});

const api = (method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, key: string, payload?: object) =>
  p.app.inject({ method, url, headers: bearer(key), ...(payload ? { payload } : {}) });
const chat = (key: string, headers: Record<string, string> = {}) =>
  p.app.inject({
    method: 'POST',
    url: '/v1/chat/completions',
    headers: { ...bearer(key), ...headers },
    payload: { model: MODEL, messages: [{ role: 'user', content: 'hi' }], max_tokens: 1 },
  });
const fieldOf = (res: { json(): unknown }) =>
  (res.json() as { error: { details?: { field?: string } } }).error.details?.field;

/**
 * Sets the route through the API and waits until the gateway serves it. Routes, projects and limits reach a
 * replica in one snapshot, so once this returns the gateway also holds every limit and project written before.
 */
async function routeAndWait(route: { stable: string; canary?: string; canaryWeight?: number }, expectVersion: string) {
  const res = await api('PUT', `/v1/models/${MODEL}/route`, acme.keys.operator, route);
  expect(res.statusCode).toBe(200);
  await eventually(
    `the gateway to serve ${expectVersion}`,
    async () => (await chat(acme.keys.developer)).headers['x-llmhub-model-version'] === expectVersion,
    PROPAGATION_DEADLINE_MS,
  );
}

describe('API keys', () => {
  it('creates a key that works on the gateway, lists it without its secret, and revokes it: 401 on the gateway', async () => {
    const created = await api('POST', '/v1/api-keys', acme.keys.admin, { name: 'ci', role: 'developer' });
    expect(created.statusCode).toBe(201);
    const { id, key } = created.json() as { id: string; key: string };
    expect(key).toMatch(new RegExp(`^llmhub_${id}_`));
    expect((await chat(key)).statusCode).toBe(200);

    const listed = await api('GET', '/v1/api-keys', acme.keys.admin);
    expect(listed.statusCode).toBe(200);
    const mine = (listed.json() as { apiKeys: Record<string, unknown>[] }).apiKeys.find((k) => k.id === id);
    expect(mine).toEqual({
      id,
      name: 'ci',
      role: 'developer',
      createdAt: expect.any(String),
      revokedAt: null,
      expiresAt: null,
    });
    expect(listed.body).not.toContain(key.slice(`llmhub_${id}_`.length));

    expect((await api('DELETE', `/v1/api-keys/${id}`, acme.keys.admin)).statusCode).toBe(204);
    const refused = await eventually(
      'the gateway to refuse the revoked key',
      async () => {
        const r = await chat(key);
        return r.statusCode === 401 && r;
      },
      PROPAGATION_DEADLINE_MS,
    );
    expect(refused.json()).toMatchObject({ error: { message: 'API key has been revoked' } });
    const after = (await api('GET', '/v1/api-keys', acme.keys.admin)).json() as {
      apiKeys: { id: string; revokedAt: string | null }[];
    };
    expect(after.apiKeys.find((k) => k.id === id)?.revokedAt).toEqual(expect.any(String));
    // Revoking again is a no-op, not an error.
    expect((await api('DELETE', `/v1/api-keys/${id}`, acme.keys.admin)).statusCode).toBe(204);
  });

  it('reads an expiry as the instant RFC 3339 names: a leap second, an offset past ±15:59', async () => {
    const at = async (expiresAt: string) => {
      const res = await api('POST', '/v1/api-keys', acme.keys.admin, { name: 'edge', role: 'viewer', expiresAt });
      expect(res.statusCode).toBe(201);
      return (res.json() as { expiresAt: string }).expiresAt;
    };
    expect(await at('2099-12-31T23:59:60Z')).toBe('2100-01-01T00:00:00.000Z');
    expect(await at('2099-06-01T00:00:00+23:30')).toBe('2099-05-31T00:30:00.000Z');
    // Year 1 moved into year 0 by its offset: held at the first instant PostgreSQL takes, a key refused from the start.
    expect(await at('0001-01-01T00:00:00+23:09')).toBe('0001-01-01T00:00:00.000Z');
  });

  it("answers 404 for another tenant's key and unknown ids, and lists only the caller's tenant", async () => {
    const { id } = (
      await api('POST', '/v1/api-keys', acme.keys.admin, { name: 'acme-only', role: 'viewer' })
    ).json() as { id: string };
    const theirs = await api('DELETE', `/v1/api-keys/${id}`, other.keys.admin);
    expect(theirs.statusCode).toBe(404);
    expect(theirs.json()).toMatchObject({ error: { type: 'not_found' } });
    expect((await api('DELETE', '/v1/api-keys/0000000000000000', acme.keys.admin)).statusCode).toBe(404);
    const listed = (await api('GET', '/v1/api-keys', other.keys.admin)).json() as { apiKeys: { id: string }[] };
    expect(listed.apiKeys.map((k) => k.id)).not.toContain(id);
    // The other tenant's attempt left the key as it was.
    expect((await api('GET', '/v1/api-keys', acme.keys.admin)).json()).toMatchObject({
      apiKeys: expect.arrayContaining([expect.objectContaining({ id, revokedAt: null })]),
    });
  });

  it('needs the admin role, and names a bad field', async () => {
    for (const role of ['viewer', 'developer', 'operator', 'approver'] as const) {
      expect((await api('POST', '/v1/api-keys', acme.keys[role], { name: 'x', role: 'admin' })).statusCode).toBe(403);
      expect((await api('GET', '/v1/api-keys', acme.keys[role])).statusCode).toBe(403);
    }
    const bad = await api('POST', '/v1/api-keys', acme.keys.admin, { name: 'x', role: 'root' });
    expect(bad.statusCode).toBe(400);
    expect(fieldOf(bad)).toBe('body.role');
  });

  it('refuses text PostgreSQL cannot store with 400 naming the field, and stores nothing', async () => {
    const nul = await api('POST', '/v1/api-keys', acme.keys.admin, { name: 'a\u0000b', role: 'viewer' });
    expect({ status: nul.statusCode, field: fieldOf(nul) }).toEqual({ status: 400, field: 'body.name' });
    const model = uniqueId('nul');
    const named = await api('POST', '/v1/models', acme.keys.admin, { id: model, name: 'x\u0000' });
    expect({ status: named.statusCode, field: fieldOf(named) }).toEqual({ status: 400, field: 'body.name' });
    // An unpaired surrogate would otherwise be stored as U+FFFD: quietly not what was sent.
    const lone = await api('POST', '/v1/models', acme.keys.admin, {
      id: model,
      name: 'x',
      description: 'half \ud800 pair',
    });
    expect({ status: lone.statusCode, field: fieldOf(lone) }).toEqual({ status: 400, field: 'body.description' });
    expect((await api('GET', `/v1/models/${model}`, acme.keys.admin)).statusCode).toBe(404);
    const query = await api('DELETE', '/v1/limits?subject=a%00b', acme.keys.admin);
    expect({ status: query.statusCode, field: fieldOf(query) }).toEqual({ status: 400, field: 'querystring.subject' });
    const { apiKeys } = (await api('GET', '/v1/api-keys', acme.keys.admin)).json() as { apiKeys: { name: string }[] };
    expect(apiKeys.some((k) => k.name.startsWith('a') && k.name.endsWith('b') && k.name.length === 3)).toBe(false);
  });
});

describe('projects', () => {
  it('creates a project the gateway accepts as X-Project-ID, for its tenant only', async () => {
    const id = uniqueId('proj');
    expect((await chat(acme.keys.developer, { 'x-project-id': id })).statusCode).toBe(403);
    const created = await api('POST', '/v1/projects', acme.keys.admin, { id, name: 'Team A' });
    expect(created.statusCode).toBe(201);
    expect(created.json()).toMatchObject({ id, name: 'Team A' });
    expect((await api('POST', '/v1/projects', acme.keys.admin, { id })).statusCode).toBe(409);
    expect((await api('POST', '/v1/projects', acme.keys.developer, { id: uniqueId('proj') })).statusCode).toBe(403);
    const bad = await api('POST', '/v1/projects', acme.keys.admin, { id: 'Not Valid' });
    expect(bad.statusCode).toBe(400);
    expect(fieldOf(bad)).toBe('body.id');

    expect((await api('GET', '/v1/projects', acme.keys.viewer)).json()).toMatchObject({
      projects: expect.arrayContaining([expect.objectContaining({ id })]),
    });
    expect(
      ((await api('GET', '/v1/projects', other.keys.viewer)).json() as { projects: { id: string }[] }).projects.map(
        (x) => x.id,
      ),
    ).not.toContain(id);
    await eventually(
      'the gateway to accept the project',
      async () => (await chat(acme.keys.developer, { 'x-project-id': id })).statusCode === 200,
      PROPAGATION_DEADLINE_MS,
    );
  });
});

describe('limits', () => {
  it('a limit set through the API holds on the gateway: 429 with Retry-After beyond it; removing it lifts it', async () => {
    const { id, key } = (
      await api('POST', '/v1/api-keys', acme.keys.admin, { name: 'limited', role: 'developer' })
    ).json() as { id: string; key: string };
    const put = await api('PUT', '/v1/limits', acme.keys.admin, {
      subject: `key:${id}`,
      windowSeconds: FOREVER_S,
      maxRequests: 2,
    });
    expect(put.statusCode).toBe(200);
    expect(put.json()).toEqual({ subject: `key:${id}`, windowSeconds: FOREVER_S, maxRequests: 2, maxTokens: null });
    expect((await api('GET', '/v1/limits', acme.keys.viewer)).json()).toMatchObject({
      limits: expect.arrayContaining([put.json()]),
    });
    expect((await api('GET', '/v1/limits', other.keys.viewer)).json()).toEqual({ limits: [], nextCursor: null });
    await routeAndWait({ stable: '1.0', canary: '2.0', canaryWeight: 100 }, '2.0');

    const statuses = [];
    for (let i = 0; i < 4; i++) statuses.push(await chat(key));
    expect(statuses.map((r) => r.statusCode)).toEqual([200, 200, 429, 429]);
    expect(Number(statuses[3]!.headers['retry-after'])).toBeGreaterThanOrEqual(1);

    expect((await api('DELETE', `/v1/limits?subject=key:${id}`, acme.keys.admin)).statusCode).toBe(204);
    expect((await api('DELETE', `/v1/limits?subject=key:${id}`, acme.keys.admin)).statusCode).toBe(404);
    await eventually(
      'the gateway to lift the limit',
      async () => (await chat(key)).statusCode === 200,
      PROPAGATION_DEADLINE_MS,
    );
    await routeAndWait({ stable: '1.0' }, '1.0');
  });

  it('refuses bad limits with the field named, and subjects that are not keys of the tenant', async () => {
    const theirs = (
      await api('POST', '/v1/api-keys', other.keys.admin, { name: 'theirs', role: 'developer' })
    ).json() as { id: string };
    // A key of another tenant is, for this one, a key that does not exist: 404.
    const cases: [object, number, string][] = [
      [{ subject: '', windowSeconds: 0, maxRequests: 1 }, 400, 'body.windowSeconds'],
      [{ subject: '', windowSeconds: 60, maxTokens: -1 }, 400, 'body.maxTokens'],
      [{ subject: '', windowSeconds: 60, maxRequests: -5 }, 400, 'body.maxRequests'],
      [{ subject: '', windowSeconds: 60 }, 400, 'body.maxRequests'],
      [{ subject: 'user:bob', windowSeconds: 60, maxRequests: 1 }, 400, 'body.subject'],
      [{ subject: `key:${theirs.id}`, windowSeconds: 60, maxRequests: 1 }, 404, 'body.subject'],
    ];
    for (const [body, status, field] of cases) {
      const res = await api('PUT', '/v1/limits', acme.keys.admin, body);
      expect({ body, status: res.statusCode, field: fieldOf(res) }).toEqual({ body, status, field });
    }
    expect(
      (await api('PUT', '/v1/limits', acme.keys.operator, { subject: '', windowSeconds: 60, maxRequests: 1 }))
        .statusCode,
    ).toBe(403);
    // Nothing was half-applied.
    expect(((await api('GET', '/v1/limits', acme.keys.admin)).json() as { limits: unknown[] }).limits).toEqual([]);
  });
});

describe('routes', () => {
  it('a route set through the API decides where requests go', async () => {
    await routeAndWait({ stable: '1.0', canary: '2.0', canaryWeight: 100 }, '2.0');
    expect((await api('GET', `/v1/models/${MODEL}/route`, acme.keys.viewer)).json()).toEqual({
      modelId: MODEL,
      stable: '1.0',
      canary: '2.0',
      canaryWeight: 100,
      autoscaling: null,
    });
    const before = { one: one.received(), two: two.received() };
    for (let i = 0; i < 10; i++) expect((await chat(acme.keys.developer)).statusCode).toBe(200);
    expect({ one: one.received() - before.one, two: two.received() - before.two }).toEqual({ one: 0, two: 10 });

    await routeAndWait({ stable: '1.0' }, '1.0');
    const back = { one: one.received(), two: two.received() };
    for (let i = 0; i < 10; i++) expect((await chat(acme.keys.developer)).statusCode).toBe(200);
    expect({ one: one.received() - back.one, two: two.received() - back.two }).toEqual({ one: 10, two: 0 });
  });

  it('refuses unknown and not-ready versions with the field named, and needs the operator role', async () => {
    // What the schema says is 400; a version that does not exist 404; one not ready, or the stable one again, 409.
    const cases: [object, number, string][] = [
      [{ stable: '9.9' }, 404, 'body.stable'],
      [{ stable: '1.0', canary: '3.0' }, 409, 'body.canary'],
      [{ stable: '1.0', canary: '1.0' }, 409, 'body.canary'],
      [{ stable: '1.0', canaryWeight: 50 }, 400, 'body.canaryWeight'],
      [{ stable: '1.0', canary: null, canaryWeight: 50 }, 400, 'body.canaryWeight'],
      [{ stable: '1.0', canary: '2.0', canaryWeight: 101 }, 400, 'body.canaryWeight'],
      // Autoscaling settings: checked, and only for a version a rollout recorded how to serve (these were routed by hand).
      [
        { stable: '1.0', autoscaling: { minReplicas: 2, maxReplicas: 1, target: { concurrency: 1 } } },
        409,
        'body.autoscaling.maxReplicas',
      ],
      [
        { stable: '1.0', autoscaling: { minReplicas: 0, maxReplicas: 1, target: { concurrency: 1 } } },
        409,
        'body.autoscaling',
      ],
    ];
    for (const [body, status, field] of cases) {
      const res = await api('PUT', `/v1/models/${MODEL}/route`, acme.keys.operator, body);
      expect({ body, status: res.statusCode, field: fieldOf(res) }).toEqual({ body, status, field });
    }
    expect((await api('PUT', `/v1/models/${MODEL}/route`, acme.keys.developer, { stable: '2.0' })).statusCode).toBe(
      403,
    );
    expect((await api('PUT', '/v1/models/no-such-model/route', acme.keys.operator, { stable: '1.0' })).statusCode).toBe(
      404,
    );
    // Another tenant cannot read or steer the model.
    expect((await api('GET', `/v1/models/${MODEL}/route`, other.keys.admin)).statusCode).toBe(404);
    expect((await api('PUT', `/v1/models/${MODEL}/route`, other.keys.admin, { stable: '2.0' })).statusCode).toBe(404);
    expect((await api('GET', `/v1/models/${MODEL}/route`, acme.keys.viewer)).json()).toMatchObject({
      stable: '1.0',
      canary: null,
    });
  });

  it('is 409 while a rollout holds the model, and works again once it is released', async () => {
    const locks = new RolloutLockStore(p.db);
    const lock = { tenantId: acme.id, modelId: MODEL, deploymentId: uniqueId('dep'), workflowId: uniqueId('rollout') };
    expect(await locks.acquire(p.db, lock)).toEqual({});
    try {
      const res = await api('PUT', `/v1/models/${MODEL}/route`, acme.keys.operator, { stable: '2.0' });
      expect(res.statusCode).toBe(409);
      expect(res.json()).toMatchObject({ error: { type: 'conflict', details: { deploymentId: lock.deploymentId } } });
    } finally {
      await locks.release(p.db, acme.id, MODEL, lock.workflowId);
    }
    expect((await api('GET', `/v1/models/${MODEL}/route`, acme.keys.viewer)).json()).toMatchObject({ stable: '1.0' });
    expect((await api('PUT', `/v1/models/${MODEL}/route`, acme.keys.operator, { stable: '1.0' })).statusCode).toBe(200);
  });
});

describe('every admin route', () => {
  it('is audited and in the OpenAPI document', async () => {
    const res = await p.app.inject({
      method: 'GET',
      url: '/v1/limits',
      headers: { ...bearer(acme.keys.viewer), 'x-trace-id': uniqueId('admin-audit') },
    });
    expect(await new AuditStore(p.db).byRequestId(res.headers['x-trace-id'] as string)).toMatchObject({
      tenantId: acme.id,
      route: '/v1/limits',
      statusCode: 200,
    });
    const doc = (await p.app.inject({ method: 'GET', url: '/openapi.json' })).json() as {
      paths: Record<string, Record<string, unknown>>;
    };
    expect(Object.keys(doc.paths['/v1/api-keys']!).sort()).toEqual(['get', 'post']);
    expect(Object.keys(doc.paths['/v1/api-keys/{id}']!)).toEqual(['delete']);
    expect(Object.keys(doc.paths['/v1/projects']!).sort()).toEqual(['get', 'post']);
    expect(Object.keys(doc.paths['/v1/limits']!).sort()).toEqual(['delete', 'get', 'put']);
    expect(Object.keys(doc.paths['/v1/models/{modelId}/route']!).sort()).toEqual(['get', 'put']);
  });
});
