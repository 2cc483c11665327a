import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { BatchV1Api } from '@kubernetes/client-node';
import { WorkflowNotFoundError, type WorkflowFailedError } from '@temporalio/client';
import { ConversionJobLabels, memoLabelOf } from '../../activities/conversion/jobs';
import { localEndpointKey, localEndpoints } from '../../activities/kubernetes/endpoints';
import { Labels } from '../../activities/kubernetes/manifests';
import { loadConfig } from '../../common/config';
import { conversionOptionsOf } from '../../common/conversion-plan';
import { DEFAULT_HYPERPARAMETERS } from '../../contracts/fine-tune';
import { pipelineChildKey, type PipelineInput, type PipelineStatus } from '../../contracts/pipeline';
import { DEFAULT_ANALYSIS } from '../../contracts/rollout';
import { ModelIdKey, OperationKindKey, TenantIdKey } from '../../contracts/search-attributes';
import { RoutingStore } from '../../common/store/routing';
import { KUBECONFIG_ENV, testKubeConfig } from '../../deploy/dev/kube/cluster';
import type { LocalJobRunner } from '../../deploy/dev/kube/local-jobs';
import { startReferenceModelServer, type ReferenceModelServer } from '../../deploy/dev/model-server/server';
import { localConversionDeps, startConversionJobRunner } from '../support/conversion';
import {
  HYPERPARAMETERS,
  fineTuneClient,
  gpuNodes,
  prepare,
  referenceTrainer,
  startReferenceTrainerRunner,
  task,
} from '../support/fine-tune';
import {
  bearer,
  eventually,
  startTestPlatform,
  uniqueId,
  type TestPlatform,
  type TestTenant,
} from '../support/platform';

/**
 * The pipeline on the real stack: the fine-tune's trainer Job and the conversion's Jobs run as local processes on the
 * local Kubernetes control plane (kwok nodes), the rollout's Deployment on kwok, its server a local reference server.
 */
const config = loadConfig();
const endpoints = new Map<string, string>();
const nodes = gpuNodes();
/** The TensorRT builds' GPU product: no node has it until a test adds one, so such a conversion stays running till then. */
const tensorrtGpus = gpuNodes();
const batch = testKubeConfig().makeApiClient(BatchV1Api);
let p: TestPlatform;
let runners: LocalJobRunner[] = [];
let server: ReferenceModelServer;

beforeAll(async () => {
  const conversionDeps = localConversionDeps(config);
  p = await startTestPlatform({
    activityDeps: {
      kubeConfigOf: (c) => (c === 'local' ? testKubeConfig() : undefined),
      trainer: referenceTrainer(config, 0),
      ...conversionDeps,
      conversionJobs: { ...conversionDeps.conversionJobs, gpuProduct: tensorrtGpus.product },
      endpointOf: localEndpoints(endpoints),
    },
  });
  const logDir = path.join(process.env.LLMHUB_TEST_DATA!, 'pipeline-jobs');
  runners = [
    await startReferenceTrainerRunner(process.env[KUBECONFIG_ENV]!, logDir),
    await startConversionJobRunner(process.env[KUBECONFIG_ENV]!, logDir, config),
  ];
  await nodes.add(4);
  server = await startReferenceModelServer({ name: 'pipeline' });
}, 300_000);
afterAll(async () => {
  await p?.close();
  await Promise.all(runners.map((r) => r.stop()));
  await server?.close();
  await nodes.removeAll();
  await tensorrtGpus.removeAll();
});

function client(tenant: TestTenant) {
  const status = async (id: string): Promise<PipelineStatus & { workflowStatus: string }> => {
    const res = await p.app.inject({ method: 'GET', url: `/v1/pipelines/${id}`, headers: bearer(tenant.keys.viewer) });
    if (res.statusCode !== 200) throw new Error(`GET /v1/pipelines/${id}: ${res.statusCode} ${res.body}`);
    return res.json();
  };
  return {
    post: (body: object, key = uniqueId('pl')) =>
      p.app.inject({
        method: 'POST',
        url: '/v1/pipelines',
        headers: { ...bearer(tenant.keys.developer), 'idempotency-key': key },
        payload: body,
      }),
    status,
    answer: (id: string, decision: 'approve' | 'deny', key = tenant.keys.approver) =>
      p.app.inject({
        method: 'POST',
        url: `/v1/pipelines/${id}/approvals`,
        headers: bearer(key),
        payload: { decision, reason: 'checked by test' },
      }),
    /** The first status at one of `stages`, or the run's failure for the assertion to show. */
    until: (id: string, ...stages: PipelineStatus['stage'][]) =>
      eventually(
        `pipeline ${id} at ${stages.join('/')}`,
        async () => {
          const s = await status(id);
          return (stages.includes(s.stage) || s.stage === 'failed' || s.stage === 'cancelled') && s;
        },
        240_000,
      ),
  };
}

const request = (modelId: string, datasetUri: string, version: string, extra: object = {}) => ({
  fineTune: {
    baseModel: { modelId, version: 'base' },
    datasetUri,
    method: 'lora',
    hyperparameters: { ...HYPERPARAMETERS, totalSteps: 20 },
    resources: { gpuCount: 1, gpuProduct: nodes.product, cpu: '500m', memory: '1Gi' },
    cluster: 'local',
    output: { version },
  },
  conversion: { cluster: 'local', targets: ['onnx'], profile: { runs: 5 } },
  rollout: {
    cluster: 'local',
    resources: { cpu: '500m', gpu: 0 },
    env: { LOG_LEVEL: 'info' },
    strategy: { readinessTimeout: '2m' },
  },
  approvalBeforeRollout: true,
  ...extra,
});

describe('pipeline', () => {
  it('fine-tunes, converts, waits for an approver, rolls the version out; the lineage shows the whole chain', async () => {
    const tenant = await p.createTenant('pl');
    const api = client(tenant);
    const { modelId, datasetUri } = await prepare(p, tenant, task(41));
    endpoints.set(localEndpointKey({ tenantId: tenant.id, modelId, version: 'ft1' }), server.url);
    const res = await api.post(request(modelId, datasetUri, 'ft1'));
    expect(res.statusCode).toBe(202);
    const { pipelineId, workflowId } = res.json();
    expect(workflowId).toBe(`pipeline/${tenant.id}/${pipelineId}`);
    const child = (kind: string) => `${kind}/${tenant.id}/pipeline-${pipelineId}`;

    const waiting = await api.until(pipelineId, 'awaiting_approval');
    expect(waiting).toMatchObject({
      stage: 'awaiting_approval',
      awaitingApproval: true,
      model: { modelId, version: 'ft1' },
      steps: {
        fineTune: { workflowId: child('fine-tune'), outcome: 'succeeded' },
        conversion: { workflowId: child('conversion'), outcome: 'succeeded' },
        rollout: { workflowId: child('rollout'), outcome: 'pending' },
      },
      conversion: { state: 'succeeded', published: ['onnx'] },
    });
    // Approvers find it by its Phase search attribute.
    await eventually('the pipeline listed as awaiting approval', async () => {
      for await (const w of p.temporal.workflow.list({
        query: `TenantId = '${tenant.id}' AND Phase = 'awaiting_approval'`,
      }))
        if (w.workflowId === workflowId) return true;
      return false;
    });
    expect((await api.answer(pipelineId, 'approve', tenant.keys.developer)).statusCode).toBe(403);
    const approved = await api.answer(pipelineId, 'approve');
    expect(approved.statusCode).toBe(200);
    expect((await api.answer(pipelineId, 'approve')).statusCode).toBe(409);

    const done = await api.until(pipelineId, 'succeeded');
    expect({ stage: done.stage, reason: done.failureReason }).toEqual({ stage: 'succeeded', reason: null });
    expect(done.steps.rollout).toEqual({ workflowId: child('rollout'), outcome: 'succeeded', reason: null });
    expect(done.approval).toMatchObject({ decision: 'approve', reason: 'checked by test' });
    const rollout = await p.app.inject({
      method: 'GET',
      url: `/v1/deployments/pipeline-${pipelineId}`,
      headers: bearer(tenant.keys.viewer),
    });
    expect(rollout.json()).toMatchObject({ phase: 'promoted', modelId, version: 'ft1' });
    expect(await new RoutingStore(p.db).getRoute(tenant.id, modelId)).toMatchObject({ stable: 'ft1', canary: null });

    const lineage = await p.app.inject({
      method: 'GET',
      url: `/v1/models/${modelId}/versions/ft1/lineage`,
      headers: bearer(tenant.keys.viewer),
    });
    expect(lineage.statusCode).toBe(200);
    const chain = lineage.json().lineage as Record<string, unknown>[];
    expect(chain.map((s) => s.stage)).toEqual(['dataset', 'base', 'fine_tuned', 'converted', 'deployed']);
    expect(chain).toMatchObject([
      { stage: 'dataset', uri: datasetUri, sha256: task(41).datasetSha256 },
      { stage: 'base', modelId, version: 'base' },
      { stage: 'fine_tuned', modelId, version: 'ft1', workflowId: child('fine-tune'), method: 'lora' },
      { stage: 'converted', kind: 'onnx', workflowId: child('conversion') },
      { stage: 'deployed', workflowId: child('rollout'), deploymentId: `pipeline-${pipelineId}`, cluster: 'local' },
    ]);

    // Every step is findable in the Temporal UI by ModelId.
    const ids = await eventually('all four runs listed by ModelId', async () => {
      const found: string[] = [];
      for await (const w of p.temporal.workflow.list({ query: `ModelId = '${modelId}'` })) found.push(w.workflowId);
      return found.length >= 4 && found.sort();
    });
    expect(ids).toEqual([child('conversion'), child('fine-tune'), workflowId, child('rollout')].sort());
  });

  it('stops before the rollout when the approver denies it, with the reason; a repeat reuses the memoised conversion', async () => {
    const tenant = await p.createTenant('pl');
    const api = client(tenant);
    const { modelId, datasetUri } = await prepare(p, tenant, task(43));
    const { pipelineId } = (await api.post(request(modelId, datasetUri, 'ft2'))).json();
    await api.until(pipelineId, 'awaiting_approval');
    expect((await api.answer(pipelineId, 'deny', tenant.keys.admin)).statusCode).toBe(200);
    const done = await api.until(pipelineId, 'failed');
    expect(done.stage).toBe('failed');
    expect(done.failureReason).toMatch(/the rollout was denied by .*: checked by test/);
    expect(done.approval).toMatchObject({ decision: 'deny' });
    expect(done.steps.rollout.outcome).toBe('skipped');
    expect(
      (
        await p.app.inject({
          method: 'GET',
          url: `/v1/deployments/pipeline-${pipelineId}`,
          headers: bearer(tenant.keys.viewer),
        })
      ).statusCode,
    ).toBe(404);

    // The same fine-tune again (the reference trainer is deterministic): the same weights, so the conversion is a memo hit.
    const again = (await api.post(request(modelId, datasetUri, 'ft2b'))).json().pipelineId as string;
    const waiting = await api.until(again, 'awaiting_approval');
    expect(waiting.steps.conversion).toEqual({
      workflowId: done.steps.conversion.workflowId,
      outcome: 'memoized',
      reason: null,
    });
    expect(waiting.conversion).toMatchObject({ state: 'succeeded', published: ['onnx'] });
    expect((await api.answer(again, 'deny')).statusCode).toBe(200);
  });

  /**
   * A pipeline waiting on a memo hit: the same fine-tune is run outside it first (the reference trainer is
   * deterministic, so the same weights), then their conversion through the API, which stays running because its
   * TensorRT build waits for a GPU node of `tensorrtGpus.product` that no node has until the test adds one.
   */
  async function waitingOnHeldConversion(seed: number, version: string) {
    const tenant = await p.createTenant('pl');
    const api = client(tenant);
    const { modelId, datasetUri } = await prepare(p, tenant, task(seed));
    const body = request(modelId, datasetUri, version, {
      conversion: { cluster: 'local', targets: ['onnx', 'tensorrt'], profile: { runs: 5 } },
    });
    const fineTune = await fineTuneClient(p, tenant).post({ ...body.fineTune, output: { version: `${version}-src` } });
    expect(fineTune.statusCode).toBe(202);
    await p.temporal.workflow.getHandle(fineTune.json().workflowId).result();
    const started = await p.app.inject({
      method: 'POST',
      url: '/v1/conversions',
      headers: { ...bearer(tenant.keys.developer), 'idempotency-key': uniqueId('conv') },
      payload: { modelId, version: `${version}-src`, ...body.conversion },
    });
    expect(started.json()).toMatchObject({ memoized: false, state: 'running' });
    const { conversionId, workflowId: conversionWorkflowId } = started.json() as {
      conversionId: string;
      workflowId: string;
    };
    const conversion = async () =>
      (
        await p.app.inject({
          method: 'GET',
          url: `/v1/conversions/${conversionId}`,
          headers: bearer(tenant.keys.viewer),
        })
      ).json();

    const { pipelineId } = (await api.post(body)).json();
    const waiting = await eventually('the pipeline waiting for the running conversion', async () => {
      const s = await api.status(pipelineId);
      return (s.steps.conversion.outcome === 'waiting' || !['fine_tune', 'conversion'].includes(s.stage)) && s;
    });
    expect(waiting).toMatchObject({
      stage: 'conversion',
      steps: { conversion: { workflowId: conversionWorkflowId, outcome: 'waiting', reason: null } },
      conversion: null,
    });
    expect((await conversion()).state).toBe('running');
    return { tenant, api, pipelineId: pipelineId as string, conversionWorkflowId, conversion };
  }

  it('waits for an identical conversion that is still running and takes its outcome, building nothing twice', async () => {
    const { tenant, api, pipelineId, conversionWorkflowId, conversion } = await waitingOnHeldConversion(67, 'ft6');
    await tensorrtGpus.add(1);
    try {
      const converted = await api.until(pipelineId, 'awaiting_approval');
      expect(converted).toMatchObject({
        stage: 'awaiting_approval',
        steps: { conversion: { workflowId: conversionWorkflowId, outcome: 'memoized', reason: null } },
        conversion: { state: 'partial', published: ['onnx'] },
      });
      const { memoKey, state, tritonRepositoryUri } = await conversion();
      expect({ state, tritonRepositoryUri }).toEqual({
        state: 'partial',
        tritonRepositoryUri: converted.conversion!.tritonRepositoryUri,
      });
      // Every step's Job exists once, all made by the conversion the pipeline waited for; the pipeline started none.
      const jobs = (
        await batch.listNamespacedJob({
          namespace: `llmhub-${tenant.id}`,
          labelSelector: `${ConversionJobLabels.memoKey}=${memoLabelOf(memoKey)}`,
        })
      ).items;
      expect(jobs.map((j) => j.metadata!.labels![ConversionJobLabels.step]).sort()).toEqual([
        'export',
        'optimize-onnx',
        'profile-onnx',
        'tensorrt',
        'validate-onnx',
      ]);
      expect([...new Set(jobs.map((j) => j.metadata!.annotations![Labels.workflowId]))]).toEqual([
        conversionWorkflowId,
      ]);
      await expect(
        p.temporal.workflow.getHandle(`conversion/${tenant.id}/pipeline-${pipelineId}`).describe(),
      ).rejects.toBeInstanceOf(WorkflowNotFoundError);
      expect((await api.answer(pipelineId, 'deny')).statusCode).toBe(200);
      expect((await api.until(pipelineId, 'failed')).steps.rollout.outcome).toBe('skipped');
    } finally {
      // The next held conversion must find no node for its TensorRT build again.
      await tensorrtGpus.removeAll();
    }
  });

  it('stops with the reason when the identical conversion it waits for breaks', async () => {
    const { api, pipelineId, conversionWorkflowId, conversion } = await waitingOnHeldConversion(79, 'ft8');
    await p.temporal.workflow.getHandle(conversionWorkflowId).cancel();
    const done = await api.until(pipelineId, 'failed');
    expect(done).toMatchObject({
      stage: 'failed',
      conversion: null,
      steps: { conversion: { workflowId: conversionWorkflowId, outcome: 'failed' }, rollout: { outcome: 'pending' } },
    });
    expect(done.steps.conversion.reason).toMatch(
      new RegExp(`^the identical conversion ${conversionWorkflowId} broke: .+`),
    );
    expect(done.failureReason).toBe(done.steps.conversion.reason);
    expect((await conversion()).state).toBe('error');
  });

  it('stops when no approver answers within the approval timeout: timed out, the rollout skipped and never started', async () => {
    const tenant = await p.createTenant('pl');
    const api = client(tenant);
    const { modelId, datasetUri } = await prepare(p, tenant, task(71));
    const key = uniqueId('pl');
    const childKey = pipelineChildKey(key);
    // Started through Temporal, not the API: the API's floor for the approval timeout is a minute, not worth sitting out.
    const input: PipelineInput = {
      tenantId: tenant.id,
      pipelineId: key,
      fineTune: {
        tenantId: tenant.id,
        fineTuneId: childKey,
        cluster: 'local',
        base: { modelId, version: 'base' },
        output: { modelId, version: 'ft7' },
        datasetUri,
        method: 'lora',
        hyperparameters: { ...DEFAULT_HYPERPARAMETERS, ...HYPERPARAMETERS, totalSteps: 20 },
        resources: { gpuCount: 1, gpuProduct: nodes.product, cpu: '500m', memory: '1Gi' },
        priority: 0,
        maxResumptions: 1,
        jobDeadlineSeconds: 3600,
      },
      conversion: { cluster: 'local', options: conversionOptionsOf({ targets: ['onnx'], profile: { runs: 5 } }) },
      rollout: {
        tenantId: tenant.id,
        deploymentId: childKey,
        cluster: 'local',
        resources: { cpu: '500m', gpu: 0, memory: '1Gi' },
        env: {},
        strategy: {
          steps: [{ setWeight: 100 }],
          analysis: DEFAULT_ANALYSIS,
          readinessTimeout: '2m',
          canaryMetadata: { annotations: {}, labels: {} },
        },
        specHash: 'test',
      },
      approvalBeforeRollout: true,
      approvalTimeoutSeconds: 2,
    };
    const handle = await p.temporal.workflow.start('runPipeline', {
      taskQueue: p.taskQueue,
      workflowId: `pipeline/${tenant.id}/${key}`,
      args: [input],
      typedSearchAttributes: [
        { key: TenantIdKey, value: tenant.id },
        { key: ModelIdKey, value: modelId },
        { key: OperationKindKey, value: 'pipeline' },
      ],
    });
    const done = await api.until(key, 'failed');
    expect(done).toMatchObject({
      stage: 'failed',
      awaitingApproval: false,
      approval: { decision: 'timed_out', by: null, reason: null },
      failureReason: 'no approval within 2s',
      steps: {
        conversion: { outcome: 'succeeded' },
        rollout: { workflowId: `rollout/${tenant.id}/${childKey}`, outcome: 'skipped', reason: null },
      },
    });
    const failed = await handle.result().then(
      () => undefined,
      (err: WorkflowFailedError) => err,
    );
    expect(failed?.cause?.message).toMatch(/stopped at awaiting_approval: no approval within 2s/);
    await expect(p.temporal.workflow.getHandle(done.steps.rollout.workflowId).describe()).rejects.toBeInstanceOf(
      WorkflowNotFoundError,
    );
    expect(
      (await p.app.inject({ method: 'GET', url: `/v1/deployments/${childKey}`, headers: bearer(tenant.keys.viewer) }))
        .statusCode,
    ).toBe(404);
    // Too late to answer now.
    expect((await api.answer(key, 'approve')).statusCode).toBe(409);
  });

  it('stops at the fine-tune when the trainer fails on a bad dataset, with the reason, and starts nothing after it', async () => {
    const tenant = await p.createTenant('pl');
    const api = client(tenant);
    const { modelId } = await prepare(p, tenant, task(47));
    const bad = `${tenant.id}/${modelId}/broken.jsonl`;
    await p.objects.put({ bucket: tenant.bucket, key: bad }, 'this is not {json');
    const { pipelineId, workflowId } = (await api.post(request(modelId, `s3://${tenant.bucket}/${bad}`, 'ft3'))).json();
    const done = await api.until(pipelineId, 'failed');
    expect(done.stage).toBe('failed');
    expect(done.steps.fineTune.outcome).toBe('failed');
    expect(done.failureReason).toMatch(/training failed/);
    expect(done.steps.conversion.outcome).toBe('pending');
    expect(done.steps.rollout.outcome).toBe('pending');
    const failed = await p.temporal.workflow
      .getHandle(workflowId)
      .result()
      .then(
        () => undefined,
        (err: WorkflowFailedError) => err,
      );
    expect(failed?.cause?.message).toMatch(/stopped at fine_tune: .*training failed/);
  });

  it('cancels the running child with the pipeline', async () => {
    const tenant = await p.createTenant('pl');
    const api = client(tenant);
    const { modelId, datasetUri } = await prepare(p, tenant, task(59));
    const body = request(modelId, datasetUri, 'ft5');
    // No node has this GPU product: the trainer's pod stays Pending, so the fine-tune child is still running.
    const { pipelineId } = (
      await api.post({
        ...body,
        fineTune: { ...body.fineTune, resources: { ...body.fineTune.resources, gpuProduct: 'NO-SUCH-GPU' } },
      })
    ).json();
    const fineTune = async () =>
      (
        await p.app.inject({
          method: 'GET',
          url: `/v1/fine-tunes/pipeline-${pipelineId}`,
          headers: bearer(tenant.keys.viewer),
        })
      ).json();
    await eventually('the fine-tune child pending', async () => (await fineTune()).phase === 'pending');
    const cancel = await p.app.inject({
      method: 'POST',
      url: `/v1/pipelines/${pipelineId}/cancel`,
      headers: bearer(tenant.keys.operator),
    });
    expect(cancel.statusCode).toBe(202);
    const done = await api.until(pipelineId, 'cancelled');
    expect(done).toMatchObject({
      stage: 'cancelled',
      failureReason: 'the pipeline was cancelled',
      steps: { fineTune: { outcome: 'cancelled' }, conversion: { outcome: 'pending' } },
    });
    expect((await fineTune()).phase).toBe('cancelled');
  });

  it('refuses bad input up front, naming the field, and starts nothing', async () => {
    const tenant = await p.createTenant('pl');
    const api = client(tenant);
    const { modelId, datasetUri } = await prepare(p, tenant, task(53));
    const base = request(modelId, datasetUri, 'ft4');
    const cases: [object, number, string][] = [
      [{ ...base, rollout: { ...base.rollout, cluster: 'nowhere' } }, 400, 'body.rollout.cluster'],
      [{ ...base, conversion: { ...base.conversion, cluster: 'nowhere' } }, 400, 'body.conversion.cluster'],
      [
        { ...base, fineTune: { ...base.fineTune, datasetUri: `s3://${tenant.bucket}/${tenant.id}/missing.jsonl` } },
        404,
        'body.fineTune.datasetUri',
      ],
      [{ ...base, rollout: { ...base.rollout, env: { API_KEY: 'plain' } } }, 400, 'body.rollout.env.API_KEY'],
    ];
    for (const [body, code, field] of cases) {
      const key = uniqueId('bad');
      const res = await api.post(body, key);
      expect({ code: res.statusCode, field: res.json().error.details?.field }).toEqual({ code, field });
      expect(
        (await p.app.inject({ method: 'GET', url: `/v1/pipelines/${key}`, headers: bearer(tenant.keys.viewer) }))
          .statusCode,
      ).toBe(404);
    }
    const schema = await api.post({ ...base, conversion: { ...base.conversion, targets: ['onnx', 'bogus'] } });
    expect(schema.statusCode).toBe(400);
    expect(schema.body).toMatch(/conversion/);
  });
});
