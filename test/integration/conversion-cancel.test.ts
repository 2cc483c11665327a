import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { BatchV1Api, CoreV1Api } from '@kubernetes/client-node';
import { CancelledFailure, WorkflowFailedError } from '@temporalio/client';
import { ConversionJobLabels, conversionJobName, memoLabelOf } from '../../activities/conversion/jobs';
import { loadConfig } from '../../common/config';
import { conversionContract, type ConversionResult } from '../../contracts/conversion';
import { parseObjectUri } from '../../common/objectstore';
import { LineageStore } from '../../common/store/lineage';
import { KUBECONFIG_ENV, testKubeConfig } from '../../deploy/dev/kube/cluster';
import { localConversionDeps, registerSeededMlp, startHeldConversionJobs } from '../support/conversion';
import {
  bearer,
  eventually,
  startTestPlatform,
  uniqueId,
  type TestPlatform,
  type TestTenant,
} from '../support/platform';

/**
 * Cancelling a conversion through the API while one step's Job runs (held by the test's job runner, so the cancel
 * lands mid-step every time): the run ends cancelled, that Job and its pod are gone, nothing stays published or
 * registered, and the memo key is free for the next identical request.
 */
let p: TestPlatform;
let acme: TestTenant;
let jobs: Awaited<ReturnType<typeof startHeldConversionJobs>>;
const modelId = uniqueId('mlp');
const batch = testKubeConfig().makeApiClient(BatchV1Api);
const core = testKubeConfig().makeApiClient(CoreV1Api);
const namespace = () => `llmhub-${acme.id}`;

beforeAll(async () => {
  jobs = await startHeldConversionJobs(process.env[KUBECONFIG_ENV]!, process.env.LLMHUB_TEST_DATA!, loadConfig());
  p = await startTestPlatform({
    activityDeps: {
      kubeConfigOf: (c) => (c === 'local' ? testKubeConfig() : undefined),
      ...localConversionDeps(jobs.config),
    },
  });
  acme = await p.createTenant('conv-cancel');
  await registerSeededMlp(p, acme, modelId);
}, 180_000);
afterAll(async () => {
  await p?.close();
  await jobs?.stop();
});

const body = { modelId, cluster: 'local', version: '1', targets: ['onnx'], profile: { runs: 5 } };
const convert = (key: string) =>
  p.app.inject({
    method: 'POST',
    url: '/v1/conversions',
    headers: { ...bearer(acme.keys.developer), 'idempotency-key': key },
    payload: body,
  });
const cancel = (id: string, key = acme.keys.developer) =>
  p.app.inject({ method: 'POST', url: `/v1/conversions/${id}/cancel`, headers: bearer(key) });
const conversionOf = async (id: string) =>
  (await p.app.inject({ method: 'GET', url: `/v1/conversions/${id}`, headers: bearer(acme.keys.viewer) })).json();
const podsOf = async (job: string) =>
  (await core.listNamespacedPod({ namespace: namespace(), labelSelector: `batch.kubernetes.io/job-name=${job}` }))
    .items;
const stepsOf = async (memoKey: string, workflowId: string) =>
  (
    await batch.listNamespacedJob({
      namespace: namespace(),
      labelSelector: `${ConversionJobLabels.memoKey}=${memoLabelOf(memoKey)}`,
    })
  ).items
    .filter((j) => j.metadata!.name!.startsWith(conversionJobName(workflowId, '')))
    .map((j) => j.metadata!.labels![ConversionJobLabels.step])
    .sort();
const objectsUnder = async (uri: string) => {
  const { bucket, key } = parseObjectUri(uri);
  return (await p.objects.list(bucket, key)).map((o) => o.key);
};

describe('conversion cancel', () => {
  it('cancels mid-step: the run ends cancelled, the running Job and its pod are deleted, nothing stays published, a new request builds afresh', async () => {
    const key = uniqueId('cancel');
    const workflowId = `conversion/${acme.id}/${key}`;
    // The profile step comes after the check that publishes the model file: the cancel must also take that back.
    const held = conversionJobName(workflowId, 'profile-onnx');
    await jobs.hold(held);
    const res = await convert(key);
    expect(res.statusCode).toBe(202);
    expect(res.json()).toMatchObject({ conversionId: key, workflowId, memoized: false });
    await eventually(
      'the held profile step to run in its pod',
      async () =>
        jobs.started(namespace(), held) === 1 && (await podsOf(held)).some((pod) => pod.status?.phase === 'Running'),
    );
    const running = await conversionOf(key);
    expect(running).toMatchObject({ state: 'running', progress: { phase: 'converting' } });
    const prefix = `s3://${acme.bucket}/conversions/${acme.id}/${running.memoKey}/`;
    expect(await objectsUnder(`${prefix}triton/`)).toEqual([
      expect.stringMatching(new RegExp(`/triton/${modelId}-onnx/1/model\\.onnx$`)),
    ]);

    // Only the conversion's own tenant can cancel it, and only a conversion that exists.
    const other = await p.createTenant('other');
    expect((await cancel(key, other.keys.developer)).statusCode).toBe(404);
    expect((await cancel(uniqueId('nothing'))).statusCode).toBe(404);
    expect((await cancel(key, acme.keys.viewer)).statusCode).toBe(403);

    const cancelled = await cancel(key);
    expect(cancelled.statusCode).toBe(202);
    expect(cancelled.json()).toEqual({ conversionId: key, workflowId, status: 'cancelling' });
    const handle = p.temporal.workflow.getHandle(workflowId);
    const err = await handle.result().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(WorkflowFailedError);
    expect((err as WorkflowFailedError).cause).toBeInstanceOf(CancelledFailure);
    expect((await handle.describe()).status.name).toBe('CANCELLED');
    expect(await handle.query(conversionContract.statusQuery)).toMatchObject({
      phase: 'cancelled',
      error: 'the conversion was cancelled',
    });

    // The held Job is deleted, its pod and program with it; the finished steps' Jobs stay until their TTL, as for any run.
    expect(await stepsOf(running.memoKey, workflowId)).toEqual(['export', 'optimize-onnx', 'validate-onnx']);
    await eventually("the held Job's pod to be gone", async () => (await podsOf(held)).length === 0);
    await eventually('the held program to be killed', async () =>
      jobs.events.some((e) => e.startsWith(`exited ${namespace()}/${held}-`) && e.endsWith('(pod gone)')),
    );
    expect((await cancel(key)).statusCode).toBe(409);

    // Nothing published or registered; the row says why and no longer holds the memo key.
    expect(await objectsUnder(prefix)).toEqual([
      expect.stringContaining('/results/'),
      expect.stringContaining('/results/'),
      expect.stringContaining('/results/'),
    ]);
    expect(await conversionOf(key)).toMatchObject({
      state: 'error',
      error: 'the conversion was cancelled',
      targets: [],
      artifacts: [],
    });
    expect(
      (
        await p.app.inject({
          method: 'GET',
          url: `/v1/models/${modelId}/versions/1/artifacts`,
          headers: bearer(acme.keys.viewer),
        })
      ).json().artifacts,
    ).toEqual([]);
    expect(
      (await new LineageStore(p.db).entriesOf(acme.id, modelId, '1')).filter((e) => e.kind === 'conversion'),
    ).toEqual([]);
    await jobs.release(held);

    // The same request again builds afresh (not memoised, not the cancelled run) and publishes.
    const again = await convert(uniqueId('again'));
    expect(again.statusCode).toBe(202);
    expect(again.json()).toMatchObject({ memoized: false, state: 'running' });
    const result = (await p.temporal.workflow.getHandle(again.json().workflowId).result()) as ConversionResult;
    expect(result).toMatchObject({ state: 'succeeded', targets: [{ target: 'onnx', status: 'published' }] });
    const artifacts = (
      await p.app.inject({
        method: 'GET',
        url: `/v1/models/${modelId}/versions/1/artifacts`,
        headers: bearer(acme.keys.viewer),
      })
    ).json().artifacts;
    expect(artifacts).toEqual([
      expect.objectContaining({ kind: 'onnx', conversionWorkflowId: again.json().workflowId }),
    ]);
    expect(await stepsOf(running.memoKey, again.json().workflowId)).toEqual([
      'export',
      'optimize-onnx',
      'profile-onnx',
      'validate-onnx',
    ]);
  });
});
