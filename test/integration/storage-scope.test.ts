import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { MockActivityEnvironment } from '@temporalio/testing';
import { createPlatformActivities } from '../../activities';
import { loadConfig } from '../../common/config';
import { objectUri } from '../../common/objectstore';
import { conversionToolchainVersion } from '../../common/conversion-toolchain';
import { conversionOptionsOf } from '../../common/conversion-plan';
import type { FineTuneInput } from '../../contracts/fine-tune';
import { platformActivityDeps } from '../../workers/platform-deps';
import {
  bearer,
  eventually,
  startTestPlatform,
  uniqueId,
  type TestPlatform,
  type TestTenant,
} from '../support/platform';
import { expectTenantKeysOnly, storeWith } from '../support/storage';
import { defaultNamespaceOf } from '../../activities/kubernetes/manifests';
import { testKubeConfig } from '../../deploy/dev/kube/cluster';
import { deleteNamespace, kube } from './kube/kube-helpers';

let p: TestPlatform;
let acme: TestTenant;
let rival: TestTenant;
let activities: ReturnType<typeof createPlatformActivities>;
const shared = uniqueId('shared');

const keysOf = (tenant: TestTenant) => p.storageAdmin!.credentialsOf(tenant.id);
const operator = (method: 'GET' | 'PUT' | 'POST' | 'DELETE', url: string, payload?: object) =>
  p.app.inject({ method, url: `/v1/platform${url}`, headers: bearer(p.operatorKey), ...(payload ? { payload } : {}) });
/** The S3 error name a call ends with, or 'ok'. */
const outcome = (call: Promise<unknown>): Promise<string> =>
  call.then(
    () => 'ok',
    (err: Error) => err.name,
  );
/** The failure type an activity run ends with. */
const failureOf = (run: Promise<unknown>): Promise<string | undefined> =>
  run.then(
    () => undefined,
    (err: { type?: string }) => err.type,
  );

beforeAll(async () => {
  p = await startTestPlatform();
  acme = await p.createTenant('acme');
  rival = await p.createTenant('rival');
  await p.objects.ensureBucket(shared);
  await p.objects.put({ bucket: shared, key: 'corpus/a.txt' }, 'shared text');
  await p.objects.put({ bucket: rival.bucket, key: 'fine-tunes/x/output/model.safetensors' }, 'rival weights');
  activities = createPlatformActivities(
    await platformActivityDeps(loadConfig(), p.db, {
      objects: p.objects,
      vectors: p.vectors,
      kubeConfigOf: (c) => (c === 'local' ? testKubeConfig() : undefined),
    }),
  );
});
afterAll(async () => {
  await p?.close();
});

describe("the S3 server itself keeps a tenant's keys in its scope", () => {
  it('reads and writes its own bucket, and is refused (AccessDenied) on another tenant’s objects and listings', async () => {
    const mine = storeWith(keysOf(acme));
    await mine.put({ bucket: acme.bucket, key: 'data/train.jsonl' }, '{"x":1}\n');
    expect((await mine.list(acme.bucket, 'data/')).map((o) => o.key)).toEqual(['data/train.jsonl']);
    const rivalObject = { bucket: rival.bucket, key: 'fine-tunes/x/output/model.safetensors' };
    expect(await outcome(mine.getStream(rivalObject))).toBe('AccessDenied');
    expect(await outcome(mine.list(rival.bucket, ''))).toBe('AccessDenied');
    expect(await outcome(mine.put({ bucket: rival.bucket, key: 'planted' }, 'x'))).toBe('AccessDenied');
    expect(await outcome(mine.list(loadConfig().PLATFORM_BUCKET, ''))).toBe('AccessDenied');
    // The platform's credential still reaches everything (it is the server's root).
    expect(await outcome(p.objects.getStream(rivalObject))).toBe('ok');
  });

  it('an operator grant opens a bucket for reading only, to that tenant only, until it is revoked', async () => {
    const mine = storeWith(keysOf(acme));
    const theirs = storeWith(keysOf(rival));
    expect(await outcome(mine.list(shared, ''))).toBe('AccessDenied');
    const granted = await operator('PUT', `/tenants/${acme.id}/storage`, { grants: [shared] });
    expect(granted.statusCode).toBe(200);
    expect(granted.json().storage).toEqual({ bucket: acme.bucket, grants: [shared] });
    expect((await operator('GET', `/tenants/${acme.id}`)).json().storage).toEqual({
      bucket: acme.bucket,
      grants: [shared],
    });
    expect((await mine.list(shared, '')).map((o) => o.key)).toEqual(['corpus/a.txt']);
    expect(await outcome(mine.getStream({ bucket: shared, key: 'corpus/a.txt' }))).toBe('ok');
    expect(await outcome(mine.put({ bucket: shared, key: 'planted' }, 'x'))).toBe('AccessDenied');
    expect(await outcome(theirs.list(shared, ''))).toBe('AccessDenied');

    const revoked = await operator('PUT', `/tenants/${acme.id}/storage`, { grants: [] });
    expect(revoked.json().storage.grants).toEqual([]);
    expect(await outcome(mine.list(shared, ''))).toBe('AccessDenied');
  });

  it('grants refuse the platform bucket, tenant buckets (403) and missing buckets (409), naming the entry; tenant admins get 403', async () => {
    for (const [bucket, status] of [
      [loadConfig().PLATFORM_BUCKET, 403],
      [rival.bucket, 403],
      [uniqueId('missing'), 409],
    ] as const) {
      const res = await operator('PUT', `/tenants/${acme.id}/storage`, { grants: [shared, bucket] });
      expect({ bucket, status: res.statusCode, field: res.json().error.details.field }).toEqual({
        bucket,
        status,
        field: 'body.grants.1',
      });
    }
    expect((await operator('GET', `/tenants/${acme.id}`)).json().storage.grants).toEqual([]);
    const byTenantAdmin = await p.app.inject({
      method: 'PUT',
      url: `/v1/platform/tenants/${acme.id}/storage`,
      headers: bearer(acme.keys.admin),
      payload: { grants: [shared] },
    });
    expect(byTenantAdmin.statusCode).toBe(403);
  });
});

describe('the API refuses URIs outside the scope (403), the same whether the object exists', () => {
  it('fine-tune datasetUri and knowledge sources', async () => {
    const modelId = uniqueId('base');
    await p.registry.createModel(acme.id, { id: modelId, name: modelId, description: '' });
    await p.registry.insertVersion(p.db, acme.id, {
      modelId,
      version: 'base',
      artifactUri: `s3://${acme.bucket}/base.safetensors`,
      workflowId: `test/${modelId}`,
    });
    await p.registry.markVersionReady(acme.id, modelId, 'base', { sizeBytes: 1, checksum: 'sha256:00', etag: null });
    const answers: string[] = [];
    for (const key of ['fine-tunes/x/output/model.safetensors', 'no/such.jsonl']) {
      const uri = `s3://${rival.bucket}/${key}`;
      const res = await p.app.inject({
        method: 'POST',
        url: '/v1/fine-tunes',
        headers: bearer(acme.keys.developer),
        payload: {
          baseModel: { modelId, version: 'base' },
          datasetUri: uri,
          method: 'lora',
          cluster: 'local',
          resources: { gpuCount: 1 },
        },
      });
      expect(res.statusCode).toBe(403);
      expect(res.json().error.details.field).toBe('body.datasetUri');
      answers.push(res.json().error.message.replace(uri, '<uri>'));
    }
    expect(answers[0]).toBe(answers[1]);
    for (const prefix of ['fine-tunes/', 'nothing-here/']) {
      const res = await p.app.inject({
        method: 'POST',
        url: '/v1/knowledge/handbook/ingestions',
        headers: bearer(acme.keys.developer),
        payload: { source: { type: 's3', bucket: rival.bucket, prefix } },
      });
      expect(res.statusCode).toBe(403);
      expect(res.json().error.details.field).toBe('body.source.bucket');
    }
  });
});

describe('the activities refuse them when called directly, before any S3 call', () => {
  const env = () => new MockActivityEnvironment();
  const rivalUri = `s3://${'BUCKET'}/fine-tunes/x/output/model.safetensors`;
  const foreign = () => rivalUri.replace('BUCKET', rival.bucket);

  it('registry, fine-tune, knowledge and conversion activities', async () => {
    expect(await failureOf(env().run(activities.inspectArtifact, foreign(), acme.id))).toBe('OutOfStorageScope');
    // A call naming no tenant (as runs recorded before the scope existed) is refused too.
    expect(await failureOf(env().run(activities.inspectArtifact, foreign()))).toBe('OutOfStorageScope');
    expect(await outcome(env().run(activities.inspectArtifact, foreign(), rival.id))).toBe('ok');

    const fineTune = {
      tenantId: acme.id,
      fineTuneId: uniqueId('ft'),
      cluster: 'local',
      base: { modelId: 'm', version: 'v' },
      output: { modelId: 'm', version: 'out' },
      datasetUri: foreign(),
    } as unknown as FineTuneInput;
    const modelId = uniqueId('m');
    await p.registry.createModel(acme.id, { id: modelId, name: modelId, description: '' });
    await p.registry.insertVersion(p.db, acme.id, {
      modelId,
      version: 'v',
      artifactUri: `s3://${acme.bucket}/w`,
      workflowId: `test/${modelId}`,
    });
    await p.registry.markVersionReady(acme.id, modelId, 'v', { sizeBytes: 1, checksum: 'sha256:00', etag: null });
    const input = { ...fineTune, base: { modelId, version: 'v' }, output: { modelId, version: 'out' } };
    expect(await failureOf(env().run(activities.resolveFineTune, input, 'wf'))).toBe('OutOfStorageScope');
    expect(
      await failureOf(
        env().run(activities.registerFineTunedVersion, input, 'wf', {
          baseArtifactUri: '',
          baseChecksum: null,
          datasetSha256: '',
          runPrefix: `s3://${rival.bucket}/fine-tunes/x/`,
          checkpointUri: null,
          resumptions: 0,
        }),
      ),
    ).toBe('OutOfStorageScope');

    const job = { cluster: 'local', namespace: defaultNamespaceOf(acme.id), name: 'ft-x-1', tenantId: acme.id };
    const rivalRun = `s3://${rival.bucket}/fine-tunes/x/`;
    expect(await failureOf(env().run(activities.watchTrainingJob, job, rivalRun, null, 0))).toBe('OutOfStorageScope');

    const ingestion = { tenantId: acme.id, namespace: 'ns', ingestionId: uniqueId('i') };
    expect(
      await failureOf(
        env().run(activities.listSource, {
          ...ingestion,
          source: { type: 's3' as const, bucket: rival.bucket, prefix: '' },
        }),
      ),
    ).toBe('OutOfStorageScope');
    expect(
      await failureOf(
        env().run(activities.ingestBatch, {
          ...ingestion,
          source: { type: 'uploads' as const },
          manifestUri: objectUri({ bucket: rival.bucket, key: 'manifest.json' }),
          collection: 'c',
          from: 0,
          to: 1,
          parser: 'builtin' as const,
          chunking: { strategy: 'paragraph' as const, size: 100, overlap: 0 },
          embedder: 'default',
          batchSize: 1,
          parallelism: 1,
        }),
      ),
    ).toBe('OutOfStorageScope');
    // Removal deletes what the manifest lacks: a manifest outside the tenant's own would empty its namespace.
    const platformBucket = loadConfig().PLATFORM_BUCKET;
    const ownManifest = (tenantId: string) =>
      objectUri({ bucket: platformBucket, key: `tenants/${tenantId}/ingestions/i/manifest.json` });
    for (const manifestUri of [
      objectUri({ bucket: rival.bucket, key: 'manifest.json' }),
      ownManifest(rival.id),
      objectUri({ bucket: platformBucket, key: `tenants/${acme.id}/ingestions/../manifest.json` }),
      objectUri({ bucket: platformBucket, key: `tenants/${acme.id}/ingestions/a/b/manifest.json` }),
    ])
      expect(await failureOf(env().run(activities.removeMissing, { ...ingestion, manifestUri, collection: 'c' }))).toBe(
        'OutOfStorageScope',
      );
    // Its own tenant's manifest passes the check (and, never written, is then not found).
    expect(
      await failureOf(
        env().run(activities.removeMissing, { ...ingestion, manifestUri: ownManifest(acme.id), collection: 'c' }),
      ),
    ).not.toBe('OutOfStorageScope');

    expect(
      await failureOf(
        env().run(
          activities.runConversionStep,
          {
            tenantId: acme.id,
            conversionId: 'c',
            workflowId: uniqueId('conv'),
            modelId,
            version: 'v',
            artifactUri: foreign(),
            artifactChecksum: 'sha256:00',
            memoKey: uniqueId('memo'),
            toolchainVersion: conversionToolchainVersion(),
            cluster: 'local',
            options: conversionOptionsOf({ targets: ['onnx'] }),
          },
          { kind: 'export' as const },
        ),
      ),
    ).toBe('OutOfStorageScope');
  });
});

describe("a tenant's model server", () => {
  afterAll(async () => {
    await deleteNamespace(kube(), defaultNamespaceOf(acme.id));
  });

  it("gets the tenant's own S3 keys from its Secret, never the platform's", async () => {
    const served = await activities.applyModelVersion({
      cluster: 'local',
      tenantId: acme.id,
      modelId: 'llama',
      version: 'v1',
      workflowId: `rollout/${acme.id}/k`,
      artifactUri: `s3://${acme.bucket}/llama/v1`,
      resources: { cpu: '100m', gpu: 0, memory: '64Mi' },
      env: {},
      podAnnotations: {},
      podLabels: {},
    });
    const deployment = await kube().apps.readNamespacedDeployment({ name: served.name, namespace: served.namespace });
    await expectTenantKeysOnly(deployment, acme.id);
    const env = deployment.spec!.template.spec!.containers[0]!.env!;
    expect(env).toContainEqual({ name: 'S3_ENDPOINT', value: process.env.S3_ENDPOINT });
  });
});

describe('tenant lifecycle', () => {
  it('creating a tenant makes its bucket and S3 user; deleting it removes both and its grants', async () => {
    const id = uniqueId('lifecycle');
    const created = await operator('POST', '/tenants', { id });
    expect(created.statusCode).toBe(201);
    const { bucket } = created.json().tenant.storage;
    expect(bucket).toBe(p.storageScopes.bucketOf(id));
    const keys = p.storageAdmin!.credentialsOf(id);
    const own = storeWith(keys);
    await own.put({ bucket, key: 'a.txt' }, 'mine');
    expect((await operator('PUT', `/tenants/${id}/storage`, { grants: [shared] })).statusCode).toBe(200);
    expect(await outcome(own.list(shared, ''))).toBe('ok');

    await p.tenants.setSuspended(id, true);
    expect((await operator('DELETE', `/tenants/${id}`)).statusCode).toBe(202);
    await eventually(
      'the deletion run to finish',
      async () => (await operator('GET', `/tenants/${id}/deletion`)).json().phase === 'deleted',
    );
    expect(await outcome(p.objects.list(bucket, ''))).toBe('NoSuchBucket');
    // The user is gone: the S3 server no longer knows its keys.
    expect(await outcome(own.list(shared, ''))).toBe('InvalidAccessKeyId');
    expect(await p.storageScopes.granteesOf(shared)).toEqual([]);
  });
});
