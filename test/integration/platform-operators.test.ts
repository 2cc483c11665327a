import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createLocalJWKSet, exportJWK, generateKeyPair, SignJWT } from 'jose';
import { defaultNamespaceOf } from '../../activities/kubernetes/manifests';
import { AuditStore } from '../../common/store/audit';
import { startReferenceModelServer, type ReferenceModelServer } from '../../deploy/dev/model-server/server';
import { serveModel, untilRouted } from '../support/gateway';
import { kube } from './kube/kube-helpers';
import { bearer, eventually, startTestPlatform, uniqueId, type TestPlatform } from '../support/platform';

let p: TestPlatform;
let server: ReferenceModelServer;
let signer: (claims: Record<string, unknown>) => Promise<string>;
const ISSUER = 'https://idp.test';
// Long enough that only the tenant's NOTIFY (not a cache expiry) can make a suspension reach the gateway in time.
const KEY_CACHE_TTL_MS = 600_000;
const PROPAGATION_DEADLINE_MS = 30_000;
// Far longer than the test: a window boundary never refills an allowance mid-test.
const FOREVER_S = 2_000_000_000;

beforeAll(async () => {
  const { publicKey, privateKey } = await generateKeyPair('ES256');
  const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256' };
  signer = (claims) => {
    const token = new SignJWT(claims)
      .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
      .setIssuer(ISSUER)
      .setAudience('llmhub')
      .setExpirationTime('5m');
    // A `sub` among the claims is signed as given (setSubject would refuse a non-string one).
    return ('sub' in claims ? token : token.setSubject('someone')).sign(privateKey);
  };
  p = await startTestPlatform({
    jwt: {
      jwks: createLocalJWKSet({ keys: [jwk] }),
      issuer: ISSUER,
      audience: 'llmhub',
      platformAdminClaim: 'llmhub_platform_admin',
    },
    gateway: { refreshMs: 500, keyCacheTtlMs: KEY_CACHE_TTL_MS },
  });
  server = await startReferenceModelServer({ name: 'ops' });
});
afterAll(async () => {
  await p?.close();
  await server?.close();
});

type Method = 'GET' | 'POST' | 'PUT' | 'DELETE';
const api = (method: Method, url: string, key: string, payload?: object) =>
  p.app.inject({ method, url, headers: bearer(key), ...(payload ? { payload } : {}) });
const chat = (key: string, model: string) =>
  p.app.inject({
    method: 'POST',
    url: '/v1/chat/completions',
    headers: bearer(key),
    payload: { model, messages: [{ role: 'user', content: 'hi' }], max_tokens: 1 },
  });

async function createTenant(body: object) {
  const res = await api('POST', '/v1/platform/tenants', p.operatorKey, body);
  expect(res.statusCode).toBe(201);
  return res.json() as { tenant: { id: string; gpuQuota: number }; adminKey: { id: string; key: string } };
}

describe('platform operators', () => {
  it('create a tenant in one call; tenant members never reach operator routes, operators never reach tenant routes', async () => {
    const id = uniqueId('ops-new');
    const created = await createTenant({ id, name: 'New Co', gpuQuota: 3 });
    expect(created.tenant).toMatchObject({
      id,
      name: 'New Co',
      suspendedAt: null,
      gpuQuota: 3,
      // The configured default ceiling (LLMHUB_TENANT_DEFAULT_LIMIT).
      limitCeiling: { windowSeconds: 60, maxRequests: 600, maxTokens: 1000000 },
    });
    const admin = created.adminKey.key;
    expect((await api('GET', '/v1/api-keys', admin)).statusCode).toBe(200);
    expect((await api('POST', '/v1/platform/tenants', p.operatorKey, { id })).statusCode).toBe(409);

    // A tenant admin is not an operator: every operator route is 403, and the tenant's own quota and ceiling stay.
    for (const [method, url, body] of [
      ['GET', '/v1/platform/tenants', undefined],
      ['POST', '/v1/platform/tenants', { id: uniqueId('ops-sneak') }],
      ['PUT', `/v1/platform/tenants/${id}/gpu-quota`, { gpus: 100000 }],
      ['PUT', `/v1/platform/tenants/${id}/limit-ceiling`, { windowSeconds: 1, maxRequests: 1000000 }],
      ['DELETE', `/v1/platform/tenants/${id}/limit-ceiling`, undefined],
      ['POST', `/v1/platform/tenants/${id}/resume`, undefined],
    ] as const) {
      expect({ method, url, status: (await api(method, url, admin, body)).statusCode }).toEqual({
        method,
        url,
        status: 403,
      });
    }
    expect((await api('PUT', '/v1/quotas/gpu', admin, { gpus: 100000 })).statusCode).toBe(403);
    expect((await api('DELETE', '/v1/limits?subject=platform', admin)).statusCode).toBe(403);
    expect((await api('GET', '/v1/quotas/gpu', admin)).json()).toMatchObject({ gpus: 3 });
    expect((await api('GET', '/v1/limits', admin)).json()).toEqual({
      limits: [{ subject: 'platform', windowSeconds: 60, maxRequests: 600, maxTokens: 1000000 }],
      nextCursor: null,
    });

    // An operator is a member of no tenant.
    for (const url of ['/v1/models', '/v1/api-keys', '/v1/quotas/gpu'])
      expect({ url, status: (await api('GET', url, p.operatorKey)).statusCode }).toEqual({ url, status: 403 });

    // The operator's calls are audited as the operator's.
    const res = await p.app.inject({
      method: 'PUT',
      url: `/v1/platform/tenants/${id}/gpu-quota`,
      headers: { ...bearer(p.operatorKey), 'x-trace-id': uniqueId('ops-audit') },
      payload: { gpus: 5 },
    });
    expect(res.json()).toMatchObject({ id, gpuQuota: 5 });
    expect(await new AuditStore(p.db).byRequestId(res.headers['x-trace-id'] as string)).toMatchObject({
      principal: expect.stringMatching(/^platform-key:/),
      role: 'platform-admin',
      statusCode: 200,
    });
    expect((await api('GET', '/v1/quotas/gpu', admin)).json()).toMatchObject({ gpus: 5 });
  });

  it('refuses bad tenant bodies with the field named and creates nothing', async () => {
    const cases: [object, string][] = [
      [{ id: 'Bad_Id' }, 'body.id'],
      [{ id: 'a/b' }, 'body.id'],
      [{ id: uniqueId('ops'), gpuQuota: -1 }, 'body.gpuQuota'],
      [{ id: uniqueId('ops'), limitCeiling: { windowSeconds: 60 } }, 'body.limitCeiling'],
      [{ id: uniqueId('ops'), extra: 1 }, 'body'],
    ];
    for (const [body, field] of cases) {
      const res = await api('POST', '/v1/platform/tenants', p.operatorKey, body);
      const got = (res.json() as { error: { details?: { field?: string } } }).error.details?.field;
      expect({ body, status: res.statusCode, field: got?.startsWith(field) }).toEqual({
        body,
        status: 400,
        field: true,
      });
      const id = (body as { id: string }).id;
      expect(await p.tenants.tenantExists(id)).toBe(false);
    }
  });

  it("a ceiling holds on the gateway beside the tenant's own limits, and only an operator lifts it", async () => {
    const id = uniqueId('ops-ceil');
    const { adminKey } = await createTenant({ id, limitCeiling: { windowSeconds: FOREVER_S, maxRequests: 2 } });
    const model = uniqueId('ceil-chat');
    await serveModel(p.db, id, model, { '1': server.url }, { stable: '1' });
    await untilRouted(p.app, adminKey.key, model); // its probes count against the ceiling too
    // The tenant's own looser limit does not lift the platform's.
    expect(
      (await api('PUT', '/v1/limits', adminKey.key, { subject: '', windowSeconds: 60, maxRequests: 1000 })).statusCode,
    ).toBe(200);
    await eventually(
      'the ceiling to refuse',
      async () => (await chat(adminKey.key, model)).statusCode === 429,
      PROPAGATION_DEADLINE_MS,
    );
    expect((await api('DELETE', `/v1/platform/tenants/${id}/limit-ceiling`, p.operatorKey)).statusCode).toBe(204);
    await eventually(
      'the gateway to lift the ceiling',
      async () => (await chat(adminKey.key, model)).statusCode === 200,
      PROPAGATION_DEADLINE_MS,
    );
  });

  it('suspends a tenant: its keys and tokens are refused at once, and work again on resume; a deletion run removes its namespace and data', async () => {
    const id = uniqueId('ops-susp');
    const { adminKey } = await createTenant({ id });
    const model = uniqueId('susp-chat');
    await serveModel(p.db, id, model, { '1': server.url }, { stable: '1' });
    await untilRouted(p.app, adminKey.key, model);
    const token = await signer({ tenant_id: id, roles: ['viewer'] });
    expect((await api('GET', '/v1/models', token)).statusCode).toBe(200);
    // Cached as valid now: only the suspension's notification can make the gateway refuse it within the deadline.
    expect((await chat(adminKey.key, model)).statusCode).toBe(200);

    expect((await api('DELETE', `/v1/platform/tenants/${id}`, p.operatorKey)).statusCode).toBe(409);
    const suspended = await api('POST', `/v1/platform/tenants/${id}/suspend`, p.operatorKey);
    expect(suspended.json()).toMatchObject({ id, suspendedAt: expect.any(String) });
    await eventually(
      'the gateway to refuse the suspended tenant',
      async () => (await chat(adminKey.key, model)).statusCode === 401,
      PROPAGATION_DEADLINE_MS,
    );
    expect((await api('GET', '/v1/models', token)).statusCode).toBe(401);

    expect((await api('POST', `/v1/platform/tenants/${id}/resume`, p.operatorKey)).statusCode).toBe(200);
    await eventually(
      'the gateway to serve the resumed tenant',
      async () => (await chat(adminKey.key, model)).statusCode === 200,
      PROPAGATION_DEADLINE_MS,
    );
    expect((await api('GET', '/v1/models', token)).statusCode).toBe(200);

    // Something of the tenant's on the cluster: its namespace, with an object in it.
    const k = kube();
    const namespace = defaultNamespaceOf(id);
    await k.core.createNamespace({ body: { metadata: { name: namespace } } });
    await k.core.createNamespacedConfigMap({
      namespace,
      body: { metadata: { name: 'left-behind' }, data: { a: 'b' } },
    });

    await api('POST', `/v1/platform/tenants/${id}/suspend`, p.operatorKey);
    const deleting = await api('DELETE', `/v1/platform/tenants/${id}`, p.operatorKey);
    expect(deleting.statusCode).toBe(202);
    const { statusUrl } = deleting.json() as { statusUrl: string };
    // Repeated while it runs: the same run.
    const again = await api('DELETE', `/v1/platform/tenants/${id}`, p.operatorKey);
    expect([202, 404]).toContain(again.statusCode);
    await eventually(
      'the deletion to finish',
      async () => ((await api('GET', statusUrl, p.operatorKey)).json() as { phase: string }).phase === 'deleted',
    );
    expect((await api('GET', statusUrl, p.operatorKey)).json()).toEqual({ phase: 'deleted', clustersDone: ['local'] });
    await expect(k.core.readNamespace({ name: namespace })).rejects.toMatchObject({ code: 404 });
    expect((await api('GET', `/v1/platform/tenants/${id}`, p.operatorKey)).statusCode).toBe(404);
    expect((await api('DELETE', `/v1/platform/tenants/${id}`, p.operatorKey)).statusCode).toBe(404);
    for (const table of ['api_keys', 'models', 'model_versions', 'model_routes', 'gateway_limits', 'gpu_quotas']) {
      const { rowCount } = await p.db.query(`SELECT 1 FROM ${table} WHERE tenant_id = $1`, [id]);
      expect({ table, rowCount }).toEqual({ table, rowCount: 0 });
    }
    expect((await api('GET', '/v1/models', adminKey.key)).statusCode).toBe(401);
    expect((await api('GET', '/v1/models', await signer({ tenant_id: id, roles: ['viewer'] }))).statusCode).toBe(401);
  });

  it('refuses expired and revoked keys, and operator tokens only by the named claim and without a tenant', async () => {
    const tenant = await p.createTenant('ops-keys');
    const past = await p.tenants.createApiKey(tenant.id, 'old', 'admin', new Date(Date.now() - 1000));
    const res = await api('GET', '/v1/models', past.key);
    expect({ status: res.statusCode, message: (res.json() as { error: { message: string } }).error.message }).toEqual({
      status: 401,
      message: 'API key has expired',
    });
    // An expiry already past makes a key that is refused from its first use.
    const expired = await api('POST', '/v1/api-keys', tenant.keys.admin, {
      name: 'x',
      role: 'viewer',
      expiresAt: '2001-01-01T00:00:00Z',
    });
    expect(expired.statusCode).toBe(201);
    expect(expired.json()).toMatchObject({ expiresAt: '2001-01-01T00:00:00.000Z' });
    const refused = await api('GET', '/v1/models', (expired.json() as { key: string }).key);
    expect({
      status: refused.statusCode,
      message: (refused.json() as { error: { message: string } }).error.message,
    }).toEqual({
      status: 401,
      message: 'API key has expired',
    });
    const future = '2999-01-01T00:00:00.000Z';
    const made = await api('POST', '/v1/api-keys', tenant.keys.admin, { name: 'y', role: 'viewer', expiresAt: future });
    expect(made.json()).toMatchObject({ expiresAt: future });
    expect((await api('GET', '/v1/models', (made.json() as { key: string }).key)).statusCode).toBe(200);

    const expiredOp = await p.tenants.createPlatformKey('old-op', new Date(Date.now() - 1000));
    expect((await api('GET', '/v1/platform/tenants', expiredOp.key)).statusCode).toBe(401);
    const revokedOp = await p.tenants.createPlatformKey('gone-op');
    expect((await api('GET', '/v1/platform/tenants', revokedOp.key)).statusCode).toBe(200);
    await p.tenants.revokePlatformKey(revokedOp.id);
    expect((await api('GET', '/v1/platform/tenants', revokedOp.key)).statusCode).toBe(401);

    const operatorToken = await signer({ llmhub_platform_admin: true });
    expect((await api('GET', '/v1/platform/tenants', operatorToken)).statusCode).toBe(200);
    expect((await api('GET', '/v1/models', operatorToken)).statusCode).toBe(403);
    // A `roles` claim a tenant's identity provider may let users edit makes no operator.
    const rolesOnly = await signer({ tenant_id: tenant.id, roles: ['admin', 'platform-admin'] });
    expect((await api('GET', '/v1/platform/tenants', rolesOnly)).statusCode).toBe(403);
    const both = await signer({ tenant_id: tenant.id, llmhub_platform_admin: true });
    expect((await api('GET', '/v1/platform/tenants', both)).statusCode).toBe(401);
  });

  it('refuses a token whose subject audit and usage rows could not hold, and still names the caller by a good one', async () => {
    const tenant = await p.createTenant('ops-sub');
    const refusal = {
      status: 401,
      message: 'invalid token: sub must be a string of at most 255 characters, without NUL or unpaired surrogates',
    };
    for (const sub of ['a\u0000b', 'lone \ud800', 'x'.repeat(256), { id: 'someone' }, 7]) {
      const res = await api('GET', '/v1/models', await signer({ tenant_id: tenant.id, roles: ['viewer'], sub }));
      expect({ status: res.statusCode, message: (res.json() as { error: { message: string } }).error.message }).toEqual(
        refusal,
      );
      const operator = await signer({ llmhub_platform_admin: true, sub });
      expect((await api('GET', '/v1/platform/tenants', operator)).statusCode).toBe(401);
    }
    // The longest subject allowed, in characters beyond ASCII, names its caller in the audit log.
    const sub = 'é'.repeat(255);
    const token = await signer({ tenant_id: tenant.id, roles: ['developer'], sub });
    const res = await p.app.inject({
      method: 'POST',
      url: '/v1/models',
      headers: { ...bearer(token), 'x-trace-id': uniqueId('ops-sub') },
      payload: { id: 'sub-model', name: 'x' },
    });
    expect(res.statusCode).toBe(201);
    expect(await new AuditStore(p.db).byRequestId(res.headers['x-trace-id'] as string)).toMatchObject({
      tenantId: tenant.id,
      principal: sub,
      statusCode: 201,
    });
  });
});
