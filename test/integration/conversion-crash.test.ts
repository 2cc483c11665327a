import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { BatchV1Api, CoreV1Api } from '@kubernetes/client-node';
import { ConversionJobLabels, conversionJobName, memoLabelOf } from '../../activities/conversion/jobs';
import { loadConfig } from '../../common/config';
import type { ConversionResult, TargetResult } from '../../contracts/conversion';
import { KUBECONFIG_ENV, testKubeConfig } from '../../deploy/dev/kube/cluster';
import { LOCAL_PROCESS_ANNOTATIONS } from '../../deploy/dev/kube/local-jobs';
import type { ManagedProcess } from '../../deploy/dev/process';
import { registerSeededMlp, startHeldConversionJobs } from '../support/conversion';
import {
  bearer,
  eventually,
  startTestPlatform,
  startWorkerProcess,
  uniqueId,
  type TestPlatform,
  type TestTenant,
} from '../support/platform';

/**
 * A worker SIGKILLed while a conversion step's Job runs (held by the test's job runner, so the kill lands mid-step
 * every time): after the activity's heartbeat timeout a new worker retries the step, adopts the same Job instead of
 * submitting another, and the conversion ends with the result of an uninterrupted one (another tenant's, same model).
 */
let p: TestPlatform;
let acme: TestTenant;
let reference: TestTenant;
let jobs: Awaited<ReturnType<typeof startHeldConversionJobs>>;
let worker: ManagedProcess | undefined;
const modelId = uniqueId('mlp');
const batch = testKubeConfig().makeApiClient(BatchV1Api);
const core = testKubeConfig().makeApiClient(CoreV1Api);
/** PendingActivityState.PENDING_ACTIVITY_STATE_STARTED (@temporalio/proto is no direct dependency). */
const STARTED = 2;

const startWorker = () =>
  startWorkerProcess(p, {
    KUBECONFIG: process.env[KUBECONFIG_ENV],
    LLMHUB_CLUSTERS: JSON.stringify({ local: { jobPodAnnotations: LOCAL_PROCESS_ANNOTATIONS } }),
    LLMHUB_CONVERT_IMAGE: jobs.config.LLMHUB_CONVERT_IMAGE,
    LLMHUB_CONVERT_TENSORRT_IMAGE: jobs.config.LLMHUB_CONVERT_TENSORRT_IMAGE,
  });

const registerModel = (tenant: TestTenant) => registerSeededMlp(p, tenant, modelId);

beforeAll(async () => {
  jobs = await startHeldConversionJobs(process.env[KUBECONFIG_ENV]!, process.env.LLMHUB_TEST_DATA!, loadConfig());
  p = await startTestPlatform({ worker: false });
  worker = await startWorker();
  acme = await p.createTenant('conv-crash');
  reference = await p.createTenant('conv-ref');
  await registerModel(acme);
  await registerModel(reference);
}, 180_000);
afterAll(async () => {
  await worker?.stop();
  await p?.close();
  await jobs?.stop();
});

const body = { modelId, cluster: 'local', version: '1', targets: ['onnx'], profile: { runs: 5 } };
const convert = (tenant: TestTenant, key: string) =>
  p.app.inject({
    method: 'POST',
    url: '/v1/conversions',
    headers: { ...bearer(tenant.keys.developer), 'idempotency-key': key },
    payload: body,
  });
const namespaceOf = (tenant: TestTenant) => `llmhub-${tenant.id}`;
const readJob = (name: string) => batch.readNamespacedJob({ name, namespace: namespaceOf(acme) });
const podsOf = async (job: string) =>
  (await core.listNamespacedPod({ namespace: namespaceOf(acme), labelSelector: `batch.kubernetes.io/job-name=${job}` }))
    .items;
/** What must not depend on the interruption: outcome, check and published bytes (not URIs, not latency). */
const outcomeOf = (r: ConversionResult) => ({
  state: r.state,
  targets: r.targets.map((t: TargetResult) => ({
    target: t.target,
    status: t.status,
    validation: t.validation,
    sha256: t.artifact?.sha256,
    sizeBytes: t.artifact?.sizeBytes,
    tritonModel: t.tritonModel,
  })),
});

describe('conversion survives a worker crash', () => {
  it("adopts the running step's Job after SIGKILL instead of submitting it again, and ends as an uninterrupted run", async () => {
    const key = uniqueId('crash');
    const workflowId = `conversion/${acme.id}/${key}`;
    const held = conversionJobName(workflowId, 'validate-onnx');
    await jobs.hold(held);
    expect((await convert(acme, key)).statusCode).toBe(202);
    const handle = p.temporal.workflow.getHandle(workflowId);
    await eventually(
      'the held validate step to run in its pod',
      async () =>
        jobs.started(namespaceOf(acme), held) === 1 &&
        (await podsOf(held)).some((pod) => pod.status?.phase === 'Running'),
    );
    await eventually('the first attempt of the validate step to be waiting on its Job', async () => {
      const { raw } = await handle.describe();
      return raw.pendingActivities?.some(
        (a) => a.activityType?.name === 'runConversionStep' && a.attempt === 1 && a.state === STARTED,
      );
    });
    const before = await readJob(held);

    process.kill(worker!.pid, 'SIGKILL');
    await worker!.stop();
    worker = await startWorker();

    // While the lost attempt waits out its heartbeat timeout, the new worker runs the same conversion for another tenant, uninterrupted.
    const ref = await convert(reference, uniqueId('reference'));
    expect(ref.json()).toMatchObject({ memoized: false });
    const uninterrupted = (await p.temporal.workflow.getHandle(ref.json().workflowId).result()) as ConversionResult;
    expect(uninterrupted.state).toBe('succeeded');

    // The retry runs on the new worker while the Job is still held: it can only wait on the Job that exists.
    await eventually(
      'the validate step to be retried on the new worker',
      async () => {
        const { raw } = await handle.describe();
        return raw.pendingActivities?.some(
          (a) => a.activityType?.name === 'runConversionStep' && (a.attempt ?? 0) >= 2 && a.state === STARTED,
        );
      },
      150_000,
    );
    expect(await readJob(held)).toMatchObject({
      metadata: { uid: before.metadata!.uid, generation: before.metadata!.generation },
      status: { active: 1 },
    });
    await jobs.release(held);

    const result = (await handle.result()) as ConversionResult;
    expect(outcomeOf(result)).toEqual(outcomeOf(uninterrupted));

    // Every step ran as exactly one Job; the interrupted one is the Job from before the crash, with its one pod and one program run.
    const { memoKey } = (
      await p.app.inject({ method: 'GET', url: `/v1/conversions/${key}`, headers: bearer(acme.keys.viewer) })
    ).json();
    const steps = (
      await batch.listNamespacedJob({
        namespace: namespaceOf(acme),
        labelSelector: `${ConversionJobLabels.memoKey}=${memoLabelOf(memoKey)}`,
      })
    ).items;
    expect(steps.map((j) => j.metadata!.labels![ConversionJobLabels.step]).sort()).toEqual([
      'export',
      'optimize-onnx',
      'profile-onnx',
      'validate-onnx',
    ]);
    const after = await readJob(held);
    expect(after.metadata!.uid).toBe(before.metadata!.uid);
    expect(after.status).toMatchObject({ succeeded: 1 });
    expect(after.status!.failed ?? 0).toBe(0);
    expect(await podsOf(held)).toHaveLength(1);
    expect(jobs.started(namespaceOf(acme), held)).toBe(1);
  }, 240_000);
});
