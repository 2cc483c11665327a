import { createHash } from 'node:crypto';
import { expectTenantKeysOnly } from '../support/storage';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { BatchV1Api, CoreV1Api } from '@kubernetes/client-node';
import { WorkflowNotFoundError } from '@temporalio/client';
import { memoLabelOf, ConversionJobLabels } from '../../activities/conversion/jobs';
import { loadConfig } from '../../common/config';
import type { ConversionResult, TargetResult } from '../../contracts/conversion';
import { parseObjectUri } from '../../common/objectstore';
import { KUBECONFIG_ENV, testKubeConfig } from '../../deploy/dev/kube/cluster';
import type { LocalJobRunner } from '../../deploy/dev/kube/local-jobs';
import { localConversionDeps, registerSeededMlp, startConversionJobRunner } from '../support/conversion';
import {
  bearer,
  eventually,
  startTestPlatform,
  uniqueId,
  type TestPlatform,
  type TestTenant,
} from '../support/platform';

/**
 * Conversion on the real stack: Temporal, PostgreSQL, S3 and the local Kubernetes control plane, whose Job pods run
 * the conversion programs (deploy/convert/) as local processes with the pinned toolchain (onnx, onnxruntime).
 * No GPU and no TensorRT here: the TensorRT Job is scheduled onto a kwok GPU node and reports not_run.
 */
const config = loadConfig();
let p: TestPlatform;
let acme: TestTenant;
let runner: LocalJobRunner;
let modelId: string;
const batch = testKubeConfig().makeApiClient(BatchV1Api);
const core = testKubeConfig().makeApiClient(CoreV1Api);
const namespace = () => `llmhub-${acme.id}`;

beforeAll(async () => {
  runner = await startConversionJobRunner(
    process.env[KUBECONFIG_ENV]!,
    path.join(process.env.LLMHUB_TEST_DATA!, 'conversion-jobs'),
    config,
  );
  p = await startTestPlatform({
    activityDeps: {
      kubeConfigOf: (c) => (c === 'local' ? testKubeConfig() : undefined),
      ...localConversionDeps(config),
    },
  });
  acme = await p.createTenant('acme');
  modelId = uniqueId('mlp');
  await registerSeededMlp(p, acme, modelId);
}, 300_000);
afterAll(async () => {
  await p?.close();
  await runner?.stop();
});

const convert = (payload: Record<string, unknown>, key = uniqueId('conv')) =>
  p.app.inject({
    method: 'POST',
    url: '/v1/conversions',
    headers: { ...bearer(acme.keys.developer), 'idempotency-key': key },
    payload: { modelId, cluster: 'local', ...payload },
  });
const finished = async (workflowId: string) =>
  p.temporal.workflow.getHandle(workflowId).result() as Promise<ConversionResult>;
const conversionOf = async (id: string) =>
  (await p.app.inject({ method: 'GET', url: `/v1/conversions/${id}`, headers: bearer(acme.keys.viewer) })).json();
const jobsOf = async (memoKey: string) =>
  (
    await batch.listNamespacedJob({
      namespace: namespace(),
      labelSelector: `${ConversionJobLabels.memoKey}=${memoLabelOf(memoKey)}`,
    })
  ).items;
const objectText = async (uri: string) => {
  const parts: Buffer[] = [];
  for await (const c of await p.objects.getStream(parseObjectUri(uri))) parts.push(c as Buffer);
  return Buffer.concat(parts);
};
const target = (targets: TargetResult[], t: string) => targets.find((r) => r.target === t)!;

describe('model conversion', () => {
  let firstId: string;
  let first: ReturnType<typeof JSON.parse>;

  it('converts to ONNX and int8 ONNX that pass the correctness check, publishes a Triton layout, reports TensorRT not_run', async () => {
    const res = await convert({ version: '1', targets: ['tensorrt', 'onnx-int8', 'onnx'], profile: { runs: 20 } });
    expect(res.statusCode).toBe(202);
    expect(res.json()).toMatchObject({ memoized: false, state: 'running' });
    firstId = res.json().conversionId;
    const result = await finished(res.json().workflowId);
    expect(result.state).toBe('partial');

    first = await conversionOf(firstId);
    expect(first).toMatchObject({
      state: 'partial',
      modelId,
      version: '1',
      tritonRepositoryUri: result.tritonRepositoryUri,
    });
    const onnx = target(first.targets, 'onnx');
    const int8 = target(first.targets, 'onnx-int8');
    expect(onnx).toMatchObject({
      status: 'published',
      tritonModel: `${modelId}-onnx`,
      validation: { passed: true, tolerance: 1e-4, samples: 32 },
    });
    expect(onnx.validation!.maxRelError).toBeLessThan(1e-4);
    expect(int8).toMatchObject({ status: 'published', validation: { passed: true, tolerance: 0.05 } });
    // Quantisation really changed the numbers, and the check measured it.
    expect(int8.validation!.maxRelError).toBeGreaterThan(onnx.validation!.maxRelError);
    for (const t of [onnx, int8])
      expect(t.latency).toMatchObject({ runs: 20, batch: 1, p50Ms: expect.any(Number), p95Ms: expect.any(Number) });
    const trt = target(first.targets, 'tensorrt');
    expect(trt.status).toBe('not_run');
    expect(trt.reason).toMatch(/no TensorRT on this node|no GPU/);
    expect(trt.artifact).toBeUndefined();

    // The Triton model repository: exactly a config.pbtxt and a version folder per published target; no model.plan.
    const repo = parseObjectUri(first.tritonRepositoryUri);
    const keys = (await p.objects.list(repo.bucket, `${repo.key}/`))
      .map((o) => o.key.slice(repo.key.length + 1))
      .sort();
    expect(keys).toEqual([
      `${modelId}-onnx-int8/1/model.onnx`,
      `${modelId}-onnx-int8/config.pbtxt`,
      `${modelId}-onnx/1/model.onnx`,
      `${modelId}-onnx/config.pbtxt`,
    ]);
    const pbtxt = (await objectText(onnx.configUri!)).toString('utf8');
    expect(pbtxt).toContain(`name: "${modelId}-onnx"`);
    expect(pbtxt).toContain('platform: "onnxruntime_onnx"');
    expect(pbtxt).toContain('input [ { name: "input" data_type: TYPE_FP32 dims: [ 16 ] } ]');
    expect(pbtxt).toContain('output [ { name: "output" data_type: TYPE_FP32 dims: [ 4 ] } ]');
    for (const t of [onnx, int8]) {
      const bytes = await objectText(t.artifact!.uri);
      expect(createHash('sha256').update(bytes).digest('hex')).toBe(t.artifact!.sha256);
      // An ONNX protobuf (field 1: ir_version) of the exported MLP.
      expect(bytes.length).toBe(t.artifact!.sizeBytes);
    }
    // Intermediate files are gone; the published layout stays.
    expect(await p.objects.list(repo.bucket, repo.key.replace(/triton$/, 'work/'))).toEqual([]);

    // Registered on the model version, and on the conversion.
    const artifacts = (
      await p.app.inject({
        method: 'GET',
        url: `/v1/models/${modelId}/versions/1/artifacts`,
        headers: bearer(acme.keys.viewer),
      })
    ).json().artifacts;
    expect(artifacts.map((a: { kind: string }) => a.kind).sort()).toEqual(['onnx', 'onnx-int8']);
    expect(first.artifacts).toHaveLength(2);
    expect(artifacts[0]).toMatchObject({
      conversionWorkflowId: first.workflowId,
      tritonRepositoryUri: first.tritonRepositoryUri,
    });

    // Every step ran as a Job; the TensorRT build was scheduled on a GPU node, asking for a GPU.
    const jobs = await jobsOf(first.memoKey);
    expect(jobs.map((j) => j.metadata!.labels![ConversionJobLabels.step]).sort()).toEqual([
      'export',
      'optimize-onnx',
      'optimize-onnx-int8',
      'profile-onnx',
      'profile-onnx-int8',
      'tensorrt',
      'validate-onnx',
      'validate-onnx-int8',
    ]);
    // The programs ran with the tenant's own S3 keys, never the platform's.
    for (const job of jobs) await expectTenantKeysOnly(job, acme.id);
    const trtJob = jobs.find((j) => j.metadata!.labels![ConversionJobLabels.step] === 'tensorrt')!;
    expect(trtJob.spec!.template.spec!.containers[0]!.resources!.limits!['nvidia.com/gpu']).toBe('1');
    const pods = await core.listNamespacedPod({
      namespace: namespace(),
      labelSelector: `job-name=${trtJob.metadata!.name}`,
    });
    expect(pods.items[0]!.spec!.nodeName).toMatch(/^gpu-/);
  }, 300_000);

  it('serves a repeated request from the memo at once, without a workflow or a Job', async () => {
    const jobsBefore = (await jobsOf(first.memoKey)).length;
    const key = uniqueId('again');
    // The same options in another order and with the defaults spelled out: the same memo key.
    const res = await convert(
      {
        version: '1',
        targets: ['onnx', 'onnx-int8', 'tensorrt'],
        precision: 'fp16',
        validation: { tolerance: { 'onnx-int8': 0.05, onnx: 1e-4 }, seed: 0, sampleCount: 32 },
        profile: { runs: 20 },
      },
      key,
    );
    expect(res.statusCode).toBe(200);
    expect(res.json()).toMatchObject({
      memoized: true,
      conversionId: firstId,
      workflowId: first.workflowId,
      state: 'partial',
    });
    expect(res.json().result.targets).toEqual(first.targets);
    await expect(p.temporal.workflow.getHandle(`conversion/${acme.id}/${key}`).describe()).rejects.toBeInstanceOf(
      WorkflowNotFoundError,
    );
    expect(await jobsOf(first.memoKey)).toHaveLength(jobsBefore);
    // The first request repeated with its own Idempotency-Key is that conversion; the key with another body is a 422.
    const repeat = await convert(
      { version: '1', targets: ['tensorrt', 'onnx-int8', 'onnx'], profile: { runs: 20 } },
      firstId,
    );
    expect(repeat.statusCode).toBe(200);
    expect(repeat.json()).toMatchObject({
      conversionId: firstId,
      workflowId: first.workflowId,
      memoized: false,
      state: 'partial',
    });
    expect((await convert({ version: '1', targets: ['onnx'] }, firstId)).statusCode).toBe(422);
    expect(await jobsOf(first.memoKey)).toHaveLength(jobsBefore);
    // Another tenant cannot see it.
    const other = await p.createTenant('other');
    expect(
      (await p.app.inject({ method: 'GET', url: `/v1/conversions/${firstId}`, headers: bearer(other.keys.viewer) }))
        .statusCode,
    ).toBe(404);
  });

  it('builds once for concurrent identical requests under different keys', async () => {
    const body = { version: '1', targets: ['onnx'], profile: { runs: 7 } };
    const answers = await Promise.all([convert(body), convert(body), convert(body)]);
    const builders = answers.filter((r) => r.json().memoized === false);
    expect(builders).toHaveLength(1);
    const built = builders[0]!.json();
    for (const r of answers)
      expect(r.json()).toMatchObject({ conversionId: built.conversionId, workflowId: built.workflowId });
    const result = await finished(built.workflowId);
    expect(result.state).toBe('succeeded');
    const c = await conversionOf(built.conversionId);
    expect((await jobsOf(c.memoKey)).map((j) => j.metadata!.labels![ConversionJobLabels.step]).sort()).toEqual([
      'export',
      'optimize-onnx',
      'profile-onnx',
      'validate-onnx',
    ]);
  }, 300_000);

  it('fails the correctness check of a deliberately wrong tolerance with the measured error, publishing nothing', async () => {
    // Inline samples this time: they reach the check through the conversion's S3 prefix.
    const samples = Array.from({ length: 8 }, (_, i) => Array.from({ length: 16 }, (_, j) => Math.sin(i * 16 + j)));
    const res = await convert({
      version: '1',
      targets: ['onnx-int8'],
      validation: { samples, tolerance: { 'onnx-int8': 1e-4 } },
      profile: { runs: 5 },
    });
    expect(res.statusCode).toBe(202);
    const result = await finished(res.json().workflowId);
    expect(result.state).toBe('failed');
    const int8 = target(result.targets, 'onnx-int8');
    expect(int8.status).toBe('failed');
    expect(int8.validation).toMatchObject({ passed: false, tolerance: 1e-4, samples: 8 });
    expect(int8.validation!.maxRelError).toBeGreaterThan(1e-4);
    expect(int8.reason).toContain(`max relative error ${Number(int8.validation!.maxRelError.toPrecision(3))}`);
    expect(int8.reason).toContain('exceeds the tolerance 0.0001');
    const repo = parseObjectUri(result.tritonRepositoryUri);
    expect(await p.objects.list(repo.bucket, `${repo.key}/`)).toEqual([]);
    const c = await conversionOf(res.json().conversionId);
    expect(c).toMatchObject({ state: 'failed', artifacts: [] });
  }, 300_000);

  it('fails the validation of ragged samples with the widths, as samples of the wrong width (the API cannot know it)', async () => {
    const res = await convert({ version: '1', targets: ['onnx'], validation: { samples: [[1, 2], [3]] } });
    expect(res.statusCode).toBe(202);
    const result = await finished(res.json().workflowId);
    expect(result.state).toBe('failed');
    const onnx = target(result.targets, 'onnx');
    expect(onnx.status).toBe('failed');
    expect(onnx.reason).toContain('validation samples have rows of [1, 2] values; the model takes 16 per row');
  }, 300_000);

  it("waits for the TensorRT build's GPU in the tenant's GPU quota before its Job exists, and frees it when the run ends", async () => {
    const setQuota = async (gpus: number) =>
      expect(
        (
          await p.app.inject({
            method: 'PUT',
            url: `/v1/platform/tenants/${acme.id}/gpu-quota`,
            headers: bearer(p.operatorKey),
            payload: { gpus },
          })
        ).statusCode,
      ).toBe(200);
    const usage = async () =>
      (await p.app.inject({ method: 'GET', url: '/v1/quotas/gpu', headers: bearer(acme.keys.viewer) })).json();
    await setQuota(0);
    const res = await convert({ version: '1', targets: ['tensorrt'], profile: { runs: 3 } });
    expect(res.statusCode).toBe(202);
    const { memoKey } = await conversionOf(res.json().conversionId);
    await eventually('the TensorRT build queued for a GPU', async () => (await usage()).waiting === 1);
    expect((await jobsOf(memoKey)).map((j) => j.metadata!.labels![ConversionJobLabels.step])).toEqual(['export']);

    await setQuota(8);
    const result = await finished(res.json().workflowId);
    expect(target(result.targets, 'tensorrt').status).toBe('not_run');
    expect((await jobsOf(memoKey)).map((j) => j.metadata!.labels![ConversionJobLabels.step]).sort()).toEqual([
      'export',
      'tensorrt',
    ]);
    const { rows } = await p.db.query<{ kind: string; granted: boolean; released: boolean }>(
      `SELECT kind, granted_at IS NOT NULL AS granted, released_at IS NOT NULL AS released FROM gpu_claims
       WHERE workflow_id = $1`,
      [`conversion:${res.json().workflowId}`],
    );
    expect(rows).toEqual([{ kind: 'conversion', granted: true, released: true }]);
    expect(await usage()).toMatchObject({ inUse: 0, waiting: 0, held: { conversions: 0 } });
  }, 300_000);

  it('rejects bad input with the field named, starting nothing', async () => {
    const bad = async (payload: Record<string, unknown>, status: number, field: string) => {
      const res = await convert(payload);
      expect(res.statusCode).toBe(status);
      expect(res.json().error.details.field).toBe(field);
    };
    await bad({ version: '1', targets: ['onnx', 'pytorch'] }, 400, 'body.targets.1');
    await bad({ version: '1', targets: ['onnx'], cluster: 'nowhere' }, 400, 'body.cluster');
    await bad(
      { version: '1', targets: ['onnx'], validation: { tolerance: { onnx: 0 } } },
      400,
      'body.validation.tolerance.onnx',
    );
    const missing = await convert({ version: '9', targets: ['onnx'] });
    expect(missing.statusCode).toBe(404);
    const spec = (await p.app.inject({ method: 'GET', url: '/openapi.json' })).json();
    expect(Object.keys(spec.paths)).toEqual(
      expect.arrayContaining([
        '/v1/conversions',
        '/v1/conversions/{id}',
        '/v1/models/{modelId}/versions/{version}/artifacts',
      ]),
    );
  });
});
