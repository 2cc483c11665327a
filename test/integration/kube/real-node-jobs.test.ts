import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { BatchV1Api, CoreV1Api, type V1Pod } from '@kubernetes/client-node';
import { memoLabelOf, ConversionJobLabels } from '../../../activities/conversion/jobs';
import { trainingJobName } from '../../../activities/kubernetes/jobs';
import { s3SettingsEnv } from '../../../activities/kubernetes/tenant-s3';
import { loadConfig } from '../../../common/config';
import type { ConversionResult } from '../../../contracts/conversion';
import { RunObjects, type TrainerProgress } from '../../../contracts/fine-tune';
import { testKubeConfig } from '../../../deploy/dev/kube/cluster';
import { train } from '../../../deploy/trainers/reference/train';
import { registerSeededMlp } from '../../support/conversion';
import { HYPERPARAMETERS, fineTuneClient, prepare, readObject, task } from '../../support/fine-tune';
import { bearer, eventually, startTestPlatform, uniqueId, type TestPlatform } from '../../support/platform';
import { advertiseGpus, forwardToPods, importImages, realNodeHost, type RealNodeHost } from '../../support/real-node';
import { expectTenantKeysOnly } from '../../support/storage';

/**
 * Conversion and trainer Jobs on the local cluster's real node: the platform's own images run in containerd, held to
 * that node by the cluster's nodeSelector and tolerations, with the tenant's scoped S3 keys from its Secret, reaching the test's S3
 * through a forwarder on the host's address on its link to the node (the only server this file offers to pods).
 */
const config = loadConfig();
const kc = testKubeConfig();
const core = kc.makeApiClient(CoreV1Api);
const batch = kc.makeApiClient(BatchV1Api);
/** The trainer's first attempt trains steps 0-34 (checkpoints at 10, 20, 30) and stalls before 35 until killed. */
const HOLD_AT = 35;

let node: RealNodeHost;
let p: TestPlatform;
let s3: Awaited<ReturnType<typeof forwardToPods>>;
let undoGpus: (() => Promise<void>) | undefined;

beforeAll(async () => {
  node = await realNodeHost(kc);
  const images = await importImages(['convert', 'trainer-reference']);
  s3 = await forwardToPods(node.hostAddress, { host: '127.0.0.1', port: Number(new URL(config.S3_ENDPOINT!).port) });
  const podS3 = s3SettingsEnv({ ...config, S3_ENDPOINT: s3.url('http') });
  // A trainer Job always asks for a GPU; this machine has none, so the node advertises one of the extended resource.
  undoGpus = await advertiseGpus(kc, node.name, 1);
  p = await startTestPlatform({
    activityDeps: {
      podPlacementOf: () => node.placement,
      jobPodAnnotationsOf: () => ({}),
      conversionJobs: {
        // The activity asks for <image>:<toolchain version>, the archive's second tag.
        image: 'docker.io/llmhub/convert',
        tensorrtImage: 'docker.io/llmhub/convert-tensorrt',
        s3Env: podS3,
      },
      trainer: {
        image: images['trainer-reference']!,
        env: [
          ...podS3,
          { name: 'LLMHUB_REFERENCE_STEP_DELAY_MS', value: '50' },
          { name: 'LLMHUB_REFERENCE_HOLD_AT_STEP', value: String(HOLD_AT) },
        ],
      },
    },
  });
}, 600_000);
afterAll(async () => {
  await p?.close();
  await s3?.close();
  await undoGpus?.();
});

/** The pod ran as a container of the real node (containerd's id, the node's name) and exited as expected. */
function expectRanInContainer(pod: V1Pod, exitCode: number) {
  const status = pod.status?.containerStatuses?.[0];
  expect({ node: pod.spec?.nodeName, runtime: status?.containerID?.split('://')[0] }).toEqual({
    node: node.name,
    runtime: 'containerd',
  });
  expect(status?.state?.terminated?.exitCode).toBe(exitCode);
}

describe('Jobs on the real node', () => {
  it('a conversion publishes ONNX and int8 ONNX from containers of the conversion image', async () => {
    const tenant = await p.createTenant('real-conv');
    const modelId = uniqueId('mlp');
    await registerSeededMlp(p, tenant, modelId);
    const res = await p.app.inject({
      method: 'POST',
      url: '/v1/conversions',
      headers: { ...bearer(tenant.keys.developer), 'idempotency-key': uniqueId('conv') },
      payload: { modelId, version: '1', cluster: 'local', targets: ['onnx', 'onnx-int8'], profile: { runs: 5 } },
    });
    expect(res.statusCode).toBe(202);
    const result = (await p.temporal.workflow.getHandle(res.json().workflowId).result()) as ConversionResult;
    expect(result.state).toBe('succeeded');
    const conversion = (
      await p.app.inject({
        method: 'GET',
        url: `/v1/conversions/${res.json().conversionId}`,
        headers: bearer(tenant.keys.viewer),
      })
    ).json();
    for (const target of ['onnx', 'onnx-int8'])
      expect(conversion.targets.find((t: { target: string }) => t.target === target)).toMatchObject({
        status: 'published',
        validation: { passed: true },
      });

    // Every step ran in a container on the real node and exited 0, with the tenant's keys from its Secret only.
    const namespace = `llmhub-${tenant.id}`;
    const jobs = (
      await batch.listNamespacedJob({
        namespace,
        labelSelector: `${ConversionJobLabels.memoKey}=${memoLabelOf(conversion.memoKey)}`,
      })
    ).items;
    expect(jobs.map((j) => j.metadata!.labels![ConversionJobLabels.step]).sort()).toEqual([
      'export',
      'optimize-onnx',
      'optimize-onnx-int8',
      'profile-onnx',
      'profile-onnx-int8',
      'validate-onnx',
      'validate-onnx-int8',
    ]);
    for (const job of jobs) {
      await expectTenantKeysOnly(job, tenant.id, kc);
      const [pod] = (
        await core.listNamespacedPod({ namespace, labelSelector: `batch.kubernetes.io/job-name=${job.metadata!.name}` })
      ).items;
      expect(pod?.spec?.containers[0]?.image).toMatch(/^docker\.io\/llmhub\/convert:/);
      expectRanInContainer(pod!, 0);
    }
  }, 600_000);

  it("a trainer whose pod is deleted mid-run resumes from its checkpoint on a new pod, ending with an uninterrupted run's weights", async () => {
    const tenant = await p.createTenant('real-ft');
    const api = fineTuneClient(p, tenant);
    const t = task(31);
    const { artifactUri, datasetUri, modelId } = await prepare(p, tenant, t);
    const res = await api.post({
      baseModel: { modelId, version: 'base' },
      datasetUri,
      method: 'full',
      hyperparameters: HYPERPARAMETERS,
      resources: { gpuCount: 1, cpu: '500m', memory: '512Mi' },
      cluster: 'local',
    });
    expect(res.statusCode).toBe(202);
    const { fineTuneId } = res.json();
    const before = await api.until(
      fineTuneId,
      (s) => s.progress?.step === HOLD_AT,
      `the first attempt at step ${HOLD_AT}`,
    );
    expect(before).toMatchObject({
      phase: 'running',
      job: { attempt: 1, node: node.name },
      progress: { checkpointStep: 30 },
    });

    const namespace = `llmhub-${tenant.id}`;
    const podsOf = async (attempt: number) =>
      (
        await core.listNamespacedPod({
          namespace,
          labelSelector: `batch.kubernetes.io/job-name=${trainingJobName(fineTuneId, attempt)}`,
        })
      ).items;
    const [first] = await podsOf(1);
    expect(first?.status?.containerStatuses?.[0]?.containerID).toMatch(/^containerd:\/\//);
    await expectTenantKeysOnly(
      await batch.readNamespacedJob({ name: trainingJobName(fineTuneId, 1), namespace }),
      tenant.id,
      kc,
    );
    // As `kubectl delete pod`: the default grace period; the trainer ends on SIGTERM.
    await core.deleteNamespacedPod({ name: first!.metadata!.name!, namespace });
    // The second attempt is a new pod of a new Job, a container on the same node (looked at while it exists: the
    // workflow deletes a finished Job with its pod).
    const second = await eventually('the second attempt in a container', async () => {
      const [pod] = await podsOf(2);
      return pod?.status?.containerStatuses?.[0]?.containerID ? pod : undefined;
    });
    expect(second.metadata?.uid).not.toBe(first!.metadata?.uid);
    expect({
      node: second.spec?.nodeName,
      runtime: second.status?.containerStatuses?.[0]?.containerID?.split('://')[0],
    }).toEqual({
      node: node.name,
      runtime: 'containerd',
    });

    const done = await api.until(fineTuneId, (s) => s.phase === 'succeeded', 'succeeded after resuming', 300_000);
    expect({ phase: done.phase, reason: done.failureReason }).toEqual({ phase: 'succeeded', reason: null });
    expect(done.job).toMatchObject({ attempt: 2, node: node.name });
    expect(done.resumptions.map((r) => r.fromStep)).toEqual([30]);
    const progress = JSON.parse(
      (await readObject(p, `s3://${tenant.bucket}/fine-tunes/${fineTuneId}/${RunObjects.progress}`)).toString('utf8'),
    ) as TrainerProgress;
    expect(progress.segments).toEqual([
      { attempt: 1, fromStep: 0, toStep: HOLD_AT },
      { attempt: 2, fromStep: 30, toStep: HYPERPARAMETERS.totalSteps },
    ]);

    const reference = await train(
      {
        runPrefix: `s3://${tenant.bucket}/fine-tunes/${uniqueId('uninterrupted')}/`,
        baseModelUri: artifactUri,
        datasetUri,
        method: 'full',
        hyperparameters: HYPERPARAMETERS,
        resumeFrom: null,
        attempt: 1,
        stepDelayMs: 0,
        holdAtStep: null,
      },
      p.objects,
    );
    expect(
      Buffer.compare(await readObject(p, reference.output!.uri), await readObject(p, done.result!.artifactUri)),
    ).toBe(0);
  }, 600_000);
});
