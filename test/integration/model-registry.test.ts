import { createHash } from 'node:crypto';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { WorkflowFailedError } from '@temporalio/client';
import { exportJWK, generateKeyPair, SignJWT, createLocalJWKSet } from 'jose';
import { AuditStore } from '../../common/store/audit';
import { S3ObjectStore } from '../../common/objectstore';
import { freePort } from '../../deploy/dev/process';
import { startLocalS3, type LocalS3 } from '../../deploy/dev/s3';
import { API_KEY_PATTERN, historyText } from '../support/history-text';
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
let audit: AuditStore;

beforeAll(async () => {
  p = await startTestPlatform();
  acme = await p.createTenant('acme');
  other = await p.createTenant('other');
  audit = new AuditStore(p.db);
});
afterAll(async () => {
  await p?.close();
});

async function createModel(tenant: TestTenant, id = uniqueId('llama')) {
  const res = await p.app.inject({
    method: 'POST',
    url: '/v1/models',
    headers: bearer(tenant.keys.developer),
    payload: { id, name: `Model ${id}` },
  });
  expect(res.statusCode).toBe(201);
  return id;
}

async function putArtifact(content: string, tenant = acme) {
  const key = `${uniqueId('artifact')}/model.safetensors`;
  await p.objects.put({ bucket: tenant.bucket, key }, content);
  return { uri: `s3://${tenant.bucket}/${key}`, sha256: createHash('sha256').update(content).digest('hex') };
}

const auditRowOf = (res: { headers: Record<string, unknown> }) => audit.byRequestId(String(res.headers['x-trace-id']));

describe('model registry', () => {
  it('lists models in both the seed shape and the OpenAI list shape', async () => {
    const id = await createModel(acme);
    const res = await p.app.inject({ method: 'GET', url: '/v1/models', headers: bearer(acme.keys.viewer) });
    expect(res.statusCode).toBe(200);
    const body = res.json();
    expect(body.object).toBe('list');
    expect(body.data).toContainEqual({ id, object: 'model', created: expect.any(Number), owned_by: acme.id });
    expect(body.models).toContainEqual({
      id,
      name: `Model ${id}`,
      description: '',
      type: null,
      contextLength: null,
      parameterCount: null,
      precision: null,
      resources: null,
    });
    const theirs = await p.app.inject({ method: 'GET', url: '/v1/models', headers: bearer(other.keys.viewer) });
    expect(theirs.json().models.map((m: { id: string }) => m.id)).not.toContain(id);
  });

  it('stores the metadata given at creation and answers it on get and in the list', async () => {
    const id = uniqueId('meta');
    const metadata = {
      type: 'chat',
      contextLength: 32768,
      parameterCount: 70_000_000_000,
      precision: 'bf16',
    };
    const created = await p.app.inject({
      method: 'POST',
      url: '/v1/models',
      headers: bearer(acme.keys.developer),
      payload: { id, name: id, ...metadata, resources: { cpu: 8, gpu: 4 } },
    });
    expect(created.statusCode).toBe(201);
    // CPU as a Kubernetes quantity and memory always named, as a deployment gets them.
    const expected = { id, name: id, description: '', ...metadata, resources: { cpu: '8', gpu: 4, memory: '16Gi' } };
    // OpenAI's model fields beside the registry's, so its clients' models.retrieve reads the same model.
    const createdAt = created.json().createdAt as string;
    expect(created.json()).toEqual({
      ...expected,
      createdAt: expect.any(String),
      object: 'model',
      created: Math.floor(Date.parse(createdAt) / 1000),
      owned_by: acme.id,
    });
    const got = await p.app.inject({ method: 'GET', url: `/v1/models/${id}`, headers: bearer(acme.keys.viewer) });
    expect(got.json()).toEqual(created.json());
    const list = await p.app.inject({ method: 'GET', url: '/v1/models', headers: bearer(acme.keys.viewer) });
    expect(list.json().models).toContainEqual(expected);
  });

  it.each([
    ['type', { type: 'vision' }],
    ['contextLength', { contextLength: 0 }],
    ['contextLength', { contextLength: 1.5 }],
    ['parameterCount', { parameterCount: -7 }],
    ['precision', { precision: 'fp64' }],
    ['resources.gpu', { resources: { cpu: 1, gpu: 17 } }],
    ['resources.gpu', { resources: { cpu: 1 } }],
    ['resources.cpu', { resources: { cpu: '0', gpu: 0 } }],
    ['resources.memory', { resources: { cpu: 1, gpu: 0, memory: '4GB' } }],
    ['resources.disk', { resources: { cpu: 1, gpu: 0, disk: '1Ti' } }],
  ])('refuses bad metadata with 400 naming body.%s, and creates nothing', async (field, metadata) => {
    const id = uniqueId('bad');
    const res = await p.app.inject({
      method: 'POST',
      url: '/v1/models',
      headers: bearer(acme.keys.developer),
      payload: { id, name: id, ...metadata },
    });
    expect(res.statusCode).toBe(400);
    expect(res.json().error.details.field).toBe(`body.${field}`);
    expect(await p.registry.getModel(acme.id, id)).toBeUndefined();
  });

  it('registers a version through a workflow that records size and checksum from S3', async () => {
    const modelId = await createModel(acme);
    const art = await putArtifact('weights-'.repeat(1000));
    const res = await p.app.inject({
      method: 'POST',
      url: `/v1/models/${modelId}/versions`,
      headers: { ...bearer(acme.keys.developer), 'idempotency-key': uniqueId('k') },
      payload: { version: '1.0.0', artifactUri: art.uri },
    });
    expect(res.statusCode).toBe(202);
    const { workflowId } = res.json();
    expect(workflowId).toMatch(new RegExp(`^model-version/${acme.id}/k-`));
    await p.temporal.workflow.getHandle(workflowId).result();
    const v = await p.app.inject({
      method: 'GET',
      url: `/v1/models/${modelId}/versions/1.0.0`,
      headers: bearer(acme.keys.viewer),
    });
    expect(v.json()).toMatchObject({ state: 'ready', sizeBytes: 8000, checksum: `sha256:${art.sha256}`, workflowId });
    const desc = await p.temporal.workflow.getHandle(workflowId).describe();
    expect(desc.typedSearchAttributes.get({ name: 'TenantId', type: 'KEYWORD' } as never)).toBe(acme.id);
    expect(await desc.staticSummary()).toContain(`${modelId}@1.0.0`);
  });

  it('starts exactly one workflow for 50 concurrent identical POSTs with one Idempotency-Key', async () => {
    const modelId = await createModel(acme);
    const art = await putArtifact('concurrent');
    const key = uniqueId('same');
    const answers = await Promise.all(
      Array.from({ length: 50 }, () =>
        p.app.inject({
          method: 'POST',
          url: `/v1/models/${modelId}/versions`,
          headers: { ...bearer(acme.keys.developer), 'idempotency-key': key },
          payload: { version: '2.0', artifactUri: art.uri },
        }),
      ),
    );
    expect(answers.map((a) => a.statusCode)).toEqual(Array(50).fill(202));
    const ids = new Set(answers.map((a) => a.json().workflowId));
    expect(ids).toEqual(new Set([`model-version/${acme.id}/${key}`]));
    await p.temporal.workflow.getHandle([...ids][0]!).result();
    const executions = [];
    for await (const e of p.temporal.workflow.list({ query: `WorkflowId = 'model-version/${acme.id}/${key}'` }))
      executions.push(e);
    expect(executions).toHaveLength(1);

    const again = await p.app.inject({
      method: 'POST',
      url: `/v1/models/${modelId}/versions`,
      headers: { ...bearer(acme.keys.developer), 'idempotency-key': key },
      payload: { version: '2.0', artifactUri: art.uri },
    });
    expect(again.statusCode).toBe(202);
    expect(again.json()).toMatchObject({ workflowId: [...ids][0], state: 'ready' });

    const changed = await p.app.inject({
      method: 'POST',
      url: `/v1/models/${modelId}/versions`,
      headers: { ...bearer(acme.keys.developer), 'idempotency-key': key },
      payload: { version: '2.1', artifactUri: art.uri },
    });
    expect(changed.statusCode).toBe(422);
    expect(changed.json().error).toMatchObject({
      type: 'idempotency_key_reused',
      details: { field: 'Idempotency-Key' },
    });
  });

  it('refuses a second registration of the same version under another key (409)', async () => {
    const modelId = await createModel(acme);
    const art = await putArtifact('dup');
    const post = (key: string) =>
      p.app.inject({
        method: 'POST',
        url: `/v1/models/${modelId}/versions`,
        headers: { ...bearer(acme.keys.developer), 'idempotency-key': key },
        payload: { version: '1', artifactUri: art.uri },
      });
    expect((await post(uniqueId('a'))).statusCode).toBe(202);
    const second = await post(uniqueId('b'));
    expect(second.statusCode).toBe(409);
    expect(second.json().error.details.field).toBe('body.version');
  });

  it('fails the workflow without retrying when the artifact is missing, and marks the version failed', async () => {
    const modelId = await createModel(acme);
    const res = await p.app.inject({
      method: 'POST',
      url: `/v1/models/${modelId}/versions`,
      headers: bearer(acme.keys.developer),
      payload: { version: '0.1', artifactUri: `s3://${acme.bucket}/does/not/exist.bin` },
    });
    expect(res.statusCode).toBe(202);
    const handle = p.temporal.workflow.getHandle(res.json().workflowId);
    const err = await handle.result().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(WorkflowFailedError);
    expect(String((err as WorkflowFailedError).cause?.message)).toContain('does not exist in object storage');
    const history = await handle.fetchHistory();
    const started = history.events!.filter((e) => e.activityTaskStartedEventAttributes);
    // inspectArtifact ran once (non-retryable), then markVersionFailed once.
    expect(started.map((e) => e.activityTaskStartedEventAttributes!.attempt)).toEqual([1, 1]);
    const v = await p.app.inject({
      method: 'GET',
      url: `/v1/models/${modelId}/versions/0.1`,
      headers: bearer(acme.keys.viewer),
    });
    expect(v.json()).toMatchObject({ state: 'failed', failureReason: expect.stringContaining('does not exist') });
  });

  it('never puts a secret into a workflow history', async () => {
    const modelId = await createModel(acme);
    const art = await putArtifact('secret-scan');
    const res = await p.app.inject({
      method: 'POST',
      url: `/v1/models/${modelId}/versions`,
      headers: bearer(acme.keys.admin),
      payload: { version: 's1', artifactUri: art.uri },
    });
    const handle = p.temporal.workflow.getHandle(res.json().workflowId);
    await handle.result();
    const text = historyText(await handle.fetchHistory());
    // The decoded payloads are really there: the scan would see a secret if one had been passed in.
    expect(text).toContain(art.uri);
    for (const key of Object.values(acme.keys)) expect(text).not.toContain(key.slice('llmhub_'.length + 17));
    expect(text).not.toMatch(API_KEY_PATTERN);
    expect(text).not.toContain(process.env.S3_SECRET_ACCESS_KEY!);
  });
});

describe('storage scope', () => {
  it("refuses an artifact outside the tenant's scope before any S3 call: the same 403 whether it exists or not", async () => {
    const modelId = await createModel(acme);
    const theirs = await putArtifact('their fine-tune output', other);
    const answers = [];
    for (const uri of [
      theirs.uri,
      `s3://${other.bucket}/no/such/object`,
      `s3://${process.env.PLATFORM_BUCKET}/anything`,
    ]) {
      const res = await p.app.inject({
        method: 'POST',
        url: `/v1/models/${modelId}/versions`,
        headers: bearer(acme.keys.developer),
        payload: { version: uniqueId('v'), artifactUri: uri },
      });
      expect(res.statusCode).toBe(403);
      expect(res.json().error.details.field).toBe('body.artifactUri');
      answers.push(res.json().error.message.replace(uri, '<uri>'));
    }
    expect(new Set(answers).size).toBe(1);
    expect(answers[0]).toContain("outside the tenant's storage scope");
    // Nothing was started or recorded.
    expect((await p.registry.listVersions(acme.id, modelId)).length).toBe(0);
  });

  it('refuses it in the activity too, when the workflow is started without the API', async () => {
    const modelId = await createModel(acme);
    const theirs = await putArtifact('their weights', other);
    const handle = await p.temporal.workflow.start('registerModelVersion', {
      taskQueue: p.taskQueue,
      workflowId: uniqueId('direct'),
      args: [{ tenantId: acme.id, modelId, version: '1', artifactUri: theirs.uri }],
    });
    const err = await handle.result().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(WorkflowFailedError);
    expect(String((err as WorkflowFailedError).cause?.message)).toContain("outside the tenant's storage scope");
    const history = historyText(await handle.fetchHistory());
    // Refused at once (no retries) and without hashing: no checksum of the object was computed.
    expect(history).toContain('OutOfStorageScope');
    expect(history).not.toContain(theirs.sha256);
  });
});

describe('auth, validation and audit', () => {
  it('answers 401 without or with invalid credentials, and counts both for their source address', async () => {
    const remoteAddress = `203.0.113.${Math.floor(Math.random() * 250) + 1}`;
    const none = await p.app.inject({ method: 'GET', url: '/v1/models', remoteAddress });
    expect(none.statusCode).toBe(401);
    expect(none.json().error.type).toBe('unauthorized');
    const bad = await p.app.inject({
      method: 'GET',
      url: '/v1/models',
      remoteAddress,
      headers: bearer('llmhub_0000000000000000_' + 'x'.repeat(43)),
    });
    expect(bad.statusCode).toBe(401);
    // Counted per address and minute (a flood of them must not write a row each), not one row per call.
    await eventually('the unauthenticated calls counted', async () => {
      const { rows } = await p.db.query<{ n: string }>(
        'SELECT sum(count) AS n FROM audit_unauthenticated WHERE ip = $1',
        [remoteAddress],
      );
      return rows[0]?.n === '2';
    });
    expect(await auditRowOf(none)).toBeUndefined();
    expect(await auditRowOf(bad)).toBeUndefined();
  });

  it('answers 403 for a wrong role or another tenant, and audits who it was', async () => {
    const viewer = await p.app.inject({
      method: 'POST',
      url: '/v1/models',
      headers: bearer(acme.keys.viewer),
      payload: { id: 'x', name: 'x' },
    });
    expect(viewer.statusCode).toBe(403);
    expect(await auditRowOf(viewer)).toMatchObject({ statusCode: 403, tenantId: acme.id, role: 'viewer' });
    const cross = await p.app.inject({
      method: 'GET',
      url: '/v1/models',
      headers: { ...bearer(acme.keys.admin), 'x-tenant-id': other.id },
    });
    expect(cross.statusCode).toBe(403);
    expect(cross.json().error.message).toContain(other.id);
    expect(await auditRowOf(cross)).toMatchObject({ statusCode: 403, tenantId: acme.id });
  });

  it('answers 400 naming the field for an invalid body, and 404 for an unknown model', async () => {
    const missing = await p.app.inject({
      method: 'POST',
      url: '/v1/models',
      headers: bearer(acme.keys.developer),
      payload: { id: 'ok-id' },
    });
    expect(missing.statusCode).toBe(400);
    expect(missing.json().error).toMatchObject({ type: 'invalid_request', details: { field: 'body.name' } });
    const badUri = await p.app.inject({
      method: 'POST',
      url: `/v1/models/${await createModel(acme)}/versions`,
      headers: bearer(acme.keys.developer),
      payload: { version: '1', artifactUri: 'http://example/x' },
    });
    expect(badUri.statusCode).toBe(400);
    expect(badUri.json().error.details.field).toBe('body.artifactUri');
    const badJson = await p.app.inject({
      method: 'POST',
      url: '/v1/models',
      headers: { ...bearer(acme.keys.developer), 'content-type': 'application/json' },
      payload: '{"id":',
    });
    expect(badJson.statusCode).toBe(400);
    const unknown = await p.app.inject({
      method: 'POST',
      url: '/v1/models/nope/versions',
      headers: bearer(acme.keys.developer),
      payload: { version: '1', artifactUri: `s3://${acme.bucket}/x` },
    });
    expect(unknown.statusCode).toBe(404);
    expect(unknown.json().error.type).toBe('not_found');
    for (const res of [missing, badUri, badJson, unknown])
      expect(await auditRowOf(res)).toMatchObject({ statusCode: res.statusCode });
    // The 404 left nothing behind: the same key can be used once the model exists.
    expect((await p.db.query('SELECT 1 FROM model_versions WHERE model_id = $1', ['nope'])).rowCount).toBe(0);
  });

  it('accepts a JWT signed by the configured JWKS with tenant and roles claims', async () => {
    const { publicKey, privateKey } = await generateKeyPair('ES256');
    const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256' };
    const jwtApp = await startTestPlatform({
      jwt: { jwks: createLocalJWKSet({ keys: [jwk] }), issuer: 'https://idp.test', audience: 'llmhub' },
    });
    try {
      const sign = (claims: Record<string, unknown>) =>
        new SignJWT(claims)
          .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
          .setIssuer('https://idp.test')
          .setAudience('llmhub')
          .setSubject('alice')
          .setExpirationTime('5m')
          .sign(privateKey);
      const ok = await jwtApp.app.inject({
        method: 'GET',
        url: '/v1/models',
        headers: bearer(await sign({ tenant_id: acme.id, roles: ['viewer'] })),
      });
      expect(ok.statusCode).toBe(200);
      const denied = await jwtApp.app.inject({
        method: 'POST',
        url: '/v1/models',
        headers: bearer(await sign({ tenant_id: acme.id, roles: ['viewer'] })),
        payload: { id: 'jwt-model', name: 'x' },
      });
      expect(denied.statusCode).toBe(403);
      const forged = await jwtApp.app.inject({
        method: 'GET',
        url: '/v1/models',
        headers: bearer((await sign({ tenant_id: acme.id, roles: ['admin'] })).slice(0, -4) + 'AAAA'),
      });
      expect(forged.statusCode).toBe(401);

      const refused = async (token: string) =>
        (await jwtApp.app.inject({ method: 'GET', url: '/v1/models', headers: bearer(token) })).json() as {
          error: { type: string; message: string };
        };
      // A token that never expires, an HMAC one (whatever its secret), a tenant id that is no tenant id or no tenant.
      const forever = await new SignJWT({ tenant_id: acme.id, roles: ['viewer'] })
        .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
        .setIssuer('https://idp.test')
        .setAudience('llmhub')
        .sign(privateKey);
      expect(await refused(forever)).toMatchObject({
        error: { type: 'unauthorized', message: expect.stringMatching(/"exp"/) },
      });
      const hmac = await new SignJWT({ tenant_id: acme.id, roles: ['admin'] })
        .setProtectedHeader({ alg: 'HS256', kid: 'k1' })
        .setIssuer('https://idp.test')
        .setAudience('llmhub')
        .setExpirationTime('5m')
        .sign(new TextEncoder().encode('a shared secret an attacker chose'));
      expect(await refused(hmac)).toMatchObject({
        error: { type: 'unauthorized', message: expect.stringMatching(/alg/) },
      });
      for (const tenant_id of [`${acme.id}/../other`, 'no-such-tenant-9f3c']) {
        expect(await refused(await sign({ tenant_id, roles: ['admin'] }))).toMatchObject({
          error: { type: 'unauthorized', message: 'token names no tenant of this platform' },
        });
      }
    } finally {
      await jwtApp.close();
    }
  });

  it('serves the OpenAPI document and Swagger UI without credentials', async () => {
    const doc = await p.app.inject({ method: 'GET', url: '/openapi.json' });
    expect(doc.statusCode).toBe(200);
    expect(doc.json().paths['/v1/models/{modelId}/versions']).toBeDefined();
    const ui = await p.app.inject({ method: 'GET', url: '/docs/' });
    expect(ui.statusCode).toBe(200);
    const ready = await p.app.inject({ method: 'GET', url: '/readyz' });
    expect(ready.json()).toEqual({ status: 'ready', checks: { database: 'ok', temporal: 'ok' } });
  });
});

describe('object storage outage', () => {
  let s3: LocalS3;
  let isolated: TestPlatform;
  let store: S3ObjectStore;
  beforeAll(async () => {
    s3 = await startLocalS3({
      dataDir: path.join(process.env.LLMHUB_TEST_DATA!, uniqueId('s3-outage')),
      port: await freePort(),
    });
    store = new S3ObjectStore({
      endpoint: s3.endpoint,
      region: s3.region,
      accessKeyId: s3.accessKeyId,
      secretAccessKey: s3.secretAccessKey,
      forcePathStyle: true,
    });
    isolated = await startTestPlatform({ objects: store });
  });
  afterAll(async () => {
    await isolated?.close();
    await s3?.stop();
  });

  it('retries the artifact check while the S3 server is down and succeeds once it is back', async () => {
    const tenant = await isolated.createTenant('outage');
    // The worker reads this S3 server; the tenant's bucket is made on the API's, so it is made here too.
    await store.ensureBucket(tenant.bucket);
    await store.put({ bucket: tenant.bucket, key: 'm/model.bin' }, 'survives an outage');
    const modelId = uniqueId('m');
    await isolated.app.inject({
      method: 'POST',
      url: '/v1/models',
      headers: bearer(tenant.keys.developer),
      payload: { id: modelId, name: 'm' },
    });
    await s3.stop();
    const res = await isolated.app.inject({
      method: 'POST',
      url: `/v1/models/${modelId}/versions`,
      headers: bearer(tenant.keys.developer),
      payload: { version: '1', artifactUri: `s3://${tenant.bucket}/m/model.bin` },
    });
    expect(res.statusCode).toBe(202);
    const handle = isolated.temporal.workflow.getHandle(res.json().workflowId);
    await eventually('the artifact check to have failed against the stopped server', async () => {
      const pending = (await handle.describe()).raw.pendingActivities ?? [];
      return pending.some((a) => (a.attempt ?? 0) >= 2 && a.lastFailure) || undefined;
    });
    await s3.start();
    const info = await handle.result();
    expect(info.sizeBytes).toBe('survives an outage'.length);
    const v = await isolated.registry.getVersion(tenant.id, modelId, '1');
    expect(v?.state).toBe('ready');
  });
});
