import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { expectTenantKeysOnly } from '../support/storage';
import { Labels, defaultNamespaceOf } from '../../activities/kubernetes/manifests';
import { trainingJobName } from '../../activities/kubernetes/jobs';
import { fineTuneContract } from '../../contracts/fine-tune';
import { decodeMlp, meanSquaredError } from '../../deploy/trainers/reference/mlp';
import { LineageStore } from '../../common/store/lineage';
import { historyText } from '../support/history-text';
import {
  HYPERPARAMETERS,
  fineTuneClient,
  gpuNodes,
  prepare,
  readObject,
  startFineTunePlatform,
  task,
} from '../support/fine-tune';
import { bearer, eventually, uniqueId, type TestPlatform } from '../support/platform';
import { isNotFound } from './kube/kube-helpers';

let p: TestPlatform;
let stop: () => Promise<void>;
const nodes = gpuNodes();

beforeAll(async () => {
  // 80 ms per step: a 60-step run trains for several seconds, long enough to watch it running.
  ({ p, stop } = await startFineTunePlatform(80));
  await nodes.add(8);
}, 180_000);
afterAll(async () => {
  await stop?.();
  await nodes.removeAll();
});

const request = (modelId: string, datasetUri: string, extra: object = {}) => ({
  baseModel: { modelId, version: 'base' },
  datasetUri,
  method: 'lora',
  hyperparameters: HYPERPARAMETERS,
  resources: { gpuCount: 1, gpuProduct: nodes.product, cpu: '500m', memory: '1Gi' },
  cluster: 'local',
  ...extra,
});

/** The Phase search attribute values the run went through, in order, from its history. */
async function phasesOf(workflowId: string): Promise<string[]> {
  const history = await p.temporal.workflow.getHandle(workflowId).fetchHistory();
  return history.events!.flatMap((e) => {
    const field = e.upsertWorkflowSearchAttributesEventAttributes?.searchAttributes?.indexedFields?.Phase;
    return field?.data ? [JSON.parse(Buffer.from(field.data).toString('utf8')) as string] : [];
  });
}

describe('fine-tuning', () => {
  it('runs a LoRA fine-tune queued → running → succeeded on a kwok GPU node, with a live loss curve, better held-out loss and lineage', async () => {
    const tenant = await p.createTenant('ft');
    const api = fineTuneClient(p, tenant);
    const t = task(11);
    const { modelId, artifactUri, datasetUri } = await prepare(p, tenant, t);
    const res = await api.post(request(modelId, datasetUri));
    expect(res.statusCode).toBe(202);
    const { fineTuneId, workflowId } = res.json();
    expect(workflowId).toBe(`fine-tune/${tenant.id}/${fineTuneId}`);

    // While it trains: the Job as the workflow applied it, and the loss curve in the Temporal query.
    const running = await api.until(
      fineTuneId,
      (s) => s.phase === 'running' && (s.progress?.lossCurve.length ?? 0) > 0,
      'running with a loss curve',
    );
    expect(running.phase).toBe('running');
    const queried = await p.temporal.workflow.getHandle(workflowId).query(fineTuneContract.statusQuery);
    expect(queried.progress!.lossCurve.length).toBeGreaterThan(0);
    expect(queried.job).toMatchObject({ attempt: 1, podPhase: 'Running', pendingReason: null });
    const job = await nodes.k.batch.readNamespacedJob({
      name: trainingJobName(fineTuneId, 1),
      namespace: defaultNamespaceOf(tenant.id),
    });
    expect(job.spec?.backoffLimit).toBe(0);
    expect(job.spec?.activeDeadlineSeconds).toBe(86_400);
    const pod = job.spec!.template;
    expect(pod.spec?.nodeSelector).toEqual({ 'nvidia.com/gpu.product': nodes.product });
    expect(pod.spec?.containers[0]?.resources?.limits).toMatchObject({ 'nvidia.com/gpu': '1' });
    expect(pod.spec?.tolerations).toContainEqual({ key: 'nvidia.com/gpu', operator: 'Exists', effect: 'NoSchedule' });
    expect(pod.metadata?.annotations).toMatchObject({
      'llmhub.dev/kwok-behaviour': 'local-process',
      [Labels.workflowId]: workflowId,
    });
    expect(pod.metadata?.labels).toMatchObject({ [Labels.tenant]: tenant.id, [Labels.model]: modelId });
    expect(pod.spec?.containers[0]?.env).toContainEqual({ name: 'LLMHUB_DATASET_URI', value: datasetUri });
    // The trainer reads and writes with the tenant's own S3 keys (which it does: the run succeeds), never the platform's.
    await expectTenantKeysOnly(job, tenant.id);

    const done = await api.until(fineTuneId, (s) => s.phase === 'succeeded', 'succeeded');
    expect({ phase: done.phase, reason: done.failureReason }).toEqual({ phase: 'succeeded', reason: null });
    expect(await phasesOf(workflowId)).toEqual(expect.arrayContaining(['queued', 'running', 'succeeded']));
    const phases = await phasesOf(workflowId);
    expect(phases.indexOf('queued')).toBeLessThan(phases.indexOf('running'));
    expect(done.progress).toMatchObject({ step: 60, totalSteps: 60, checkpointStep: 60 });
    expect(done.progress!.lossCurve).toHaveLength(60);
    expect(done.progress!.lossCurve.at(-1)![1]).toBeLessThan(done.progress!.lossCurve[0]![1]);
    expect(done.progress!.evalLoss).toHaveLength(6);
    expect(done.job?.node).toEqual(expect.any(String));

    // The test scores the produced weights itself, on rows the trainer never saw.
    const produced = decodeMlp(await readObject(p, done.result!.artifactUri));
    expect(meanSquaredError(produced, t.heldOut)).toBeLessThan(meanSquaredError(t.base, t.heldOut));

    const version = await p.registry.getVersion(tenant.id, modelId, done.output.version);
    expect(version).toMatchObject({
      state: 'ready',
      artifactUri: done.result!.artifactUri,
      checksum: done.result!.checksum,
      workflowId,
    });
    const [entry] = await new LineageStore(p.db).chainOf(tenant.id, modelId, done.output.version);
    expect(entry).toMatchObject({
      kind: 'fine_tune',
      parent: { modelId, version: 'base' },
      workflowId,
      details: {
        base: { modelId, version: 'base', artifactUri },
        dataset: { uri: datasetUri, sha256: t.datasetSha256 },
        method: 'lora',
        hyperparameters: HYPERPARAMETERS,
        artifact: { uri: done.result!.artifactUri, sha256: done.result!.checksum },
        checkpoint: {
          uri: expect.stringContaining('checkpoints/step-00000060'),
          sha256: expect.stringMatching(/^sha256:[0-9a-f]{64}$/),
        },
        resumptions: 0,
      },
    });
    // The Job is gone once the run ended; the claim on the quota too.
    await eventually('the Job deleted', async () => {
      try {
        await nodes.k.batch.readNamespacedJob({
          name: trainingJobName(fineTuneId, 1),
          namespace: defaultNamespaceOf(tenant.id),
        });
        return false;
      } catch (err) {
        return isNotFound(err);
      }
    });
    const usage = await p.app.inject({ method: 'GET', url: '/v1/quotas/gpu', headers: bearer(tenant.keys.viewer) });
    expect(usage.json()).toEqual({ gpus: 8, inUse: 0, waiting: 0, held: { serving: 0, fineTunes: 0, conversions: 0 } });
    const text = historyText(await p.temporal.workflow.getHandle(workflowId).fetchHistory());
    expect(text).not.toContain(process.env.S3_SECRET_ACCESS_KEY!);
  }, 300_000);

  it('refuses bad input with 400/404 naming the field, and submits nothing', async () => {
    const tenant = await p.createTenant('ft-bad');
    const api = fineTuneClient(p, tenant);
    const { modelId, datasetUri } = await prepare(p, tenant, task(12));
    const setQuota = await p.app.inject({
      method: 'PUT',
      url: `/v1/platform/tenants/${tenant.id}/gpu-quota`,
      headers: bearer(p.operatorKey),
      payload: { gpus: 2 },
    });
    expect(setQuota.statusCode).toBe(200);
    expect(
      (
        await p.app.inject({
          method: 'PUT',
          url: '/v1/quotas/gpu',
          headers: bearer(tenant.keys.developer),
          payload: { gpus: 99 },
        })
      ).statusCode,
    ).toBe(403);
    const cases: [object, number, string][] = [
      [{ ...request('no-such-model', datasetUri) }, 404, 'body.baseModel.modelId'],
      [{ ...request(modelId, datasetUri), baseModel: { modelId, version: 'nope' } }, 404, 'body.baseModel.version'],
      [request(modelId, `s3://${tenant.bucket}/${tenant.id}/missing.jsonl`), 404, 'body.datasetUri'],
      [
        request(modelId, datasetUri, { hyperparameters: { ...HYPERPARAMETERS, learningRate: -0.1 } }),
        400,
        'body.hyperparameters.learningRate',
      ],
      [
        request(modelId, datasetUri, { resources: { gpuCount: 3, gpuProduct: nodes.product } }),
        409,
        'body.resources.gpuCount',
      ],
      [request(modelId, datasetUri, { method: 'dpo' }), 400, 'body.method'],
    ];
    const keys: string[] = [];
    for (const [body, code, field] of cases) {
      const key = uniqueId('bad');
      keys.push(key);
      const res = await api.post(body, key);
      expect({ code: res.statusCode, field: res.json().error?.details?.field }).toEqual({ code, field });
    }
    for (const key of keys) {
      await expect(p.temporal.workflow.getHandle(`fine-tune/${tenant.id}/${key}`).describe()).rejects.toThrow();
    }
    const jobs = await nodes.k.batch.listNamespacedJob({ namespace: defaultNamespaceOf(tenant.id) });
    expect(jobs.items).toEqual([]);
    expect((await p.db.query('SELECT 1 FROM gpu_claims WHERE tenant_id = $1', [tenant.id])).rowCount).toBe(0);
  }, 120_000);

  it("keeps a Job asking more GPUs than any node has pending with the scheduler's reason; cancelling a queued run frees nothing it did not hold; a raised quota applies to waiting runs", async () => {
    const tenant = await p.createTenant('ft-pending');
    const api = fineTuneClient(p, tenant);
    const { modelId, datasetUri } = await prepare(p, tenant, task(14));
    expect(
      (
        await p.app.inject({
          method: 'PUT',
          url: `/v1/platform/tenants/${tenant.id}/gpu-quota`,
          headers: bearer(p.operatorKey),
          payload: { gpus: 16 },
        })
      ).statusCode,
    ).toBe(200);
    const big = (
      await api.post(
        request(modelId, datasetUri, {
          resources: { gpuCount: 16, gpuProduct: nodes.product, cpu: '500m', memory: '1Gi' },
        }),
      )
    ).json().fineTuneId as string;
    const pending = await api.until(
      big,
      (s) => s.phase === 'pending' && !!s.job?.pendingReason,
      'pending with a reason',
    );
    expect(pending.job?.pendingReason).toContain('Insufficient nvidia.com/gpu');

    // The big run holds the whole quota (it is placed, only the scheduler has nowhere to put it): a small one waits.
    const small = (await api.post(request(modelId, datasetUri, { output: { version: 'small' } }))).json()
      .fineTuneId as string;
    expect(await api.until(small, (s) => s.queue?.position === 1, 'queued first in line')).toMatchObject({
      phase: 'queued',
      job: null,
    });
    const cancel = (id: string) =>
      p.app.inject({ method: 'POST', url: `/v1/fine-tunes/${id}/cancel`, headers: bearer(tenant.keys.operator) });
    expect((await cancel(small)).statusCode).toBe(202);
    expect((await api.until(small, (s) => s.phase === 'cancelled', 'cancelled')).phase).toBe('cancelled');
    const usage = async () =>
      (await p.app.inject({ method: 'GET', url: '/v1/quotas/gpu', headers: bearer(tenant.keys.viewer) })).json();
    expect(await usage()).toEqual({
      gpus: 16,
      inUse: 16,
      waiting: 0,
      held: { serving: 0, fineTunes: 16, conversions: 0 },
    });

    // A raised quota applies to the runs already waiting.
    const next = (await api.post(request(modelId, datasetUri, { output: { version: 'next' } }))).json()
      .fineTuneId as string;
    await api.until(next, (s) => s.queue?.position === 1, 'queued first in line');
    expect(
      (
        await p.app.inject({
          method: 'PUT',
          url: `/v1/platform/tenants/${tenant.id}/gpu-quota`,
          headers: bearer(p.operatorKey),
          payload: { gpus: 17 },
        })
      ).statusCode,
    ).toBe(200);
    expect(
      (await api.until(next, (s) => s.timeline.claimedAt !== null, 'claimed under the raised quota')).phase,
    ).not.toBe('failed');
    expect((await cancel(next)).statusCode).toBe(202);
    await api.until(next, (s) => s.phase === 'cancelled', 'cancelled');

    expect((await cancel(big)).statusCode).toBe(202);
    expect((await api.until(big, (s) => s.phase === 'cancelled', 'cancelled')).phase).toBe('cancelled');
    expect(await usage()).toEqual({
      gpus: 17,
      inUse: 0,
      waiting: 0,
      held: { serving: 0, fineTunes: 0, conversions: 0 },
    });
    await eventually('the pending Job deleted', async () => {
      try {
        await nodes.k.batch.readNamespacedJob({
          name: trainingJobName(big, 1),
          namespace: defaultNamespaceOf(tenant.id),
        });
        return false;
      } catch (err) {
        return isNotFound(err);
      }
    });
    expect((await cancel(big)).statusCode).toBe(409);
  }, 180_000);

  it('fails a run whose trainer exits non-zero without resubmitting it, and releases its GPUs', async () => {
    const tenant = await p.createTenant('ft-fail');
    const api = fineTuneClient(p, tenant);
    const { modelId } = await prepare(p, tenant, task(15));
    // Rows with two inputs for a three-input model: the trainer refuses the dataset (exit code 2).
    const datasetUri = `s3://${tenant.bucket}/${tenant.id}/wrong-shape.jsonl`;
    await p.objects.put({ bucket: tenant.bucket, key: `${tenant.id}/wrong-shape.jsonl` }, '{"x":[1,2],"y":[0]}\n');
    const id = (await api.post(request(modelId, datasetUri))).json().fineTuneId as string;
    const ended = await api.until(id, (s) => s.phase === 'succeeded', 'the end of the run');
    expect(ended).toMatchObject({ phase: 'failed', resumptions: [], job: { attempt: 1 }, result: null });
    expect(ended.failureReason).toContain('the trainer exited with code 2');
    const usage = await p.app.inject({ method: 'GET', url: '/v1/quotas/gpu', headers: bearer(tenant.keys.viewer) });
    expect(usage.json()).toEqual({ gpus: 8, inUse: 0, waiting: 0, held: { serving: 0, fineTunes: 0, conversions: 0 } });
  }, 180_000);

  it('queues the third of three 1-GPU runs under a 2-GPU quota and starts it when one finishes', async () => {
    const tenant = await p.createTenant('ft-quota');
    const api = fineTuneClient(p, tenant);
    const { modelId, datasetUri } = await prepare(p, tenant, task(13));
    expect(
      (
        await p.app.inject({
          method: 'PUT',
          url: `/v1/platform/tenants/${tenant.id}/gpu-quota`,
          headers: bearer(p.operatorKey),
          payload: { gpus: 2 },
        })
      ).statusCode,
    ).toBe(200);
    const ids: string[] = [];
    for (const i of [1, 2, 3]) {
      const res = await api.post(
        request(modelId, datasetUri, {
          hyperparameters: { ...HYPERPARAMETERS, totalSteps: 40 },
          output: { version: `q${i}` },
        }),
      );
      expect(res.statusCode).toBe(202);
      ids.push(res.json().fineTuneId);
    }
    const [a, b, c] = ids as [string, string, string];
    await api.until(a, (s) => s.timeline.claimedAt !== null, 'first claimed GPUs');
    await api.until(b, (s) => s.timeline.claimedAt !== null, 'second claimed GPUs');
    // The third can only get GPUs once one of the first two has released its claim, at its very end. Its phase turns
    // to queued just before its wait joins the queue, so its position shows a moment later.
    const third = await api.until(
      c,
      (s) => (s.phase === 'queued' && s.queue !== null) || s.timeline.claimedAt !== null,
      'third queued',
    );
    const [sa, sb] = await Promise.all([api.status(a), api.status(b)]);
    if (third.timeline.claimedAt === null) {
      expect(third).toMatchObject({ phase: 'queued', queue: { position: 1 }, job: null });
      const usage = await p.app.inject({ method: 'GET', url: '/v1/quotas/gpu', headers: bearer(tenant.keys.viewer) });
      expect(usage.json()).toMatchObject({ gpus: 2, inUse: 2 });
    } else {
      expect([sa.phase, sb.phase].some((ph) => ph === 'registering' || ph === 'succeeded')).toBe(true);
    }
    const started = await api.until(c, (s) => s.timeline.claimedAt !== null, 'third claimed GPUs');
    expect(started.phase).not.toBe('failed');
    // Seen right after the third got its claim: one of the first two had already released its own.
    const [fa, fb] = await Promise.all([api.status(a), api.status(b)]);
    expect([fa.phase, fb.phase].some((ph) => ph === 'registering' || ph === 'succeeded')).toBe(true);
    for (const id of ids) {
      const s = await api.until(id, (x) => x.phase === 'succeeded', 'succeeded');
      expect({ phase: s.phase, reason: s.failureReason }).toEqual({ phase: 'succeeded', reason: null });
    }
    const usage = await p.app.inject({ method: 'GET', url: '/v1/quotas/gpu', headers: bearer(tenant.keys.viewer) });
    expect(usage.json()).toEqual({ gpus: 2, inUse: 0, waiting: 0, held: { serving: 0, fineTunes: 0, conversions: 0 } });
  }, 300_000);
});
