import { createHash, randomBytes } from 'node:crypto';
import path from 'node:path';
import { s3SettingsEnv } from '../../activities/kubernetes/tenant-s3';
import type { TrainerImage } from '../../activities/kubernetes/jobs';
import { BatchV1Api, CoreV1Api, type KubeConfig } from '@kubernetes/client-node';
import { loadConfig, type Config } from '../../common/config';
import type { FineTuneStatus } from '../../contracts/fine-tune';
import { decodeMlp, forward, type Example, type Mlp } from '../../deploy/trainers/reference/mlp';
import { testKubeConfig, KUBECONFIG_ENV } from '../../deploy/dev/kube/cluster';
import { REFERENCE_TRAINER_IMAGE, referenceTrainerProgram } from '../../deploy/dev/job-programs';
import { LOCAL_PROCESS_ANNOTATIONS, startLocalJobRunner, type LocalJobRunner } from '../../deploy/dev/kube/local-jobs';
import { isNotFound, waitFor } from '../integration/kube/kube-helpers';
import { seededMlp } from './conversion';
import { bearer, eventually, startTestPlatform, uniqueId, type TestPlatform, type TestTenant } from './platform';

/**
 * The trainer Jobs' settings for the reference trainer: `stepDelayMs` slows each step so a test can watch a run;
 * `holdAtStep` stalls every run's first attempt before that step, until its pod (and so its process) goes away.
 */
export const referenceTrainer = (config: Config, stepDelayMs: number, holdAtStep?: number): TrainerImage => ({
  image: `${REFERENCE_TRAINER_IMAGE}:1`,
  env: [
    ...s3SettingsEnv(config),
    { name: 'LLMHUB_REFERENCE_STEP_DELAY_MS', value: String(stepDelayMs) },
    ...(holdAtStep === undefined ? [] : [{ name: 'LLMHUB_REFERENCE_HOLD_AT_STEP', value: String(holdAtStep) }]),
  ],
});

/** Runs the trainer Jobs' pods as reference-trainer processes (kwok runs no containers). */
export const startReferenceTrainerRunner = (kubeconfigPath: string, logDir: string): Promise<LocalJobRunner> =>
  startLocalJobRunner({ kubeconfigPath, logDir, images: { [REFERENCE_TRAINER_IMAGE]: referenceTrainerProgram() } });

/** A platform whose trainer Jobs run on the local cluster, their pods as reference-trainer processes. */
export async function startFineTunePlatform(
  stepDelayMs: number,
  holdAtStep?: number,
): Promise<{ p: TestPlatform; stop(): Promise<void> }> {
  const p = await startTestPlatform({
    activityDeps: {
      kubeConfigOf: (c) => (c === 'local' ? testKubeConfig() : undefined),
      trainer: referenceTrainer(loadConfig(), stepDelayMs, holdAtStep),
      jobPodAnnotationsOf: () => ({ ...LOCAL_PROCESS_ANNOTATIONS }),
    },
  });
  const runner = await startReferenceTrainerRunner(
    process.env[KUBECONFIG_ENV]!,
    path.join(process.env.LLMHUB_TEST_DATA!, 'fine-tune-jobs'),
  );
  return {
    p,
    async stop() {
      await runner.stop();
      await p.close();
    },
  };
}

/** kwok GPU nodes of one test file, with a product label of their own so only its Jobs select them. */
export function gpuNodes(kc: KubeConfig = testKubeConfig()) {
  const k = { core: kc.makeApiClient(CoreV1Api), batch: kc.makeApiClient(BatchV1Api) };
  const made: string[] = [];
  const product = `LLMHUB-TEST-${randomBytes(3).toString('hex')}`;
  return {
    k,
    product,
    async add(gpus: number): Promise<string> {
      const name = uniqueId('gpu-ft').toLowerCase();
      await k.core.createNode({
        body: {
          metadata: {
            name,
            annotations: { 'kwok.x-k8s.io/node': 'fake' },
            labels: {
              type: 'kwok',
              'kubernetes.io/hostname': name,
              'nvidia.com/gpu.present': 'true',
              'nvidia.com/gpu.product': product,
            },
          },
          spec: { taints: [{ key: 'nvidia.com/gpu', value: 'present', effect: 'NoSchedule' }] },
          status: {
            capacity: { cpu: '32', memory: '128Gi', pods: '110', 'nvidia.com/gpu': String(gpus) },
            allocatable: { cpu: '32', memory: '128Gi', pods: '110', 'nvidia.com/gpu': String(gpus) },
          },
        },
      });
      made.push(name);
      await waitFor(`node ${name} Ready`, async () =>
        (await k.core.readNode({ name })).status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'),
      );
      return name;
    },
    async removeAll() {
      for (const name of made) {
        try {
          await k.core.deleteNode({ name });
        } catch (err) {
          if (!isNotFound(err)) throw err;
        }
      }
    },
  };
}

/**
 * A base model 3→16→1 and data from a "teacher" that differs from it by a perturbation of the weights, so fine-tuning
 * has something to learn. The held-out rows are never uploaded: the test scores the produced weights on them.
 */
export function task(seed: number) {
  const baseBytes = seededMlp([3, 16, 1], seed);
  const base = decodeMlp(baseBytes);
  const noise = decodeMlp(seededMlp([3, 16, 1], seed + 1));
  const teacher: Mlp = base.map((l, i) => ({ ...l, weight: l.weight.map((w, j) => w + 0.5 * noise[i]!.weight[j]!) }));
  let s = seed + 2;
  const next = () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
  const rows = (n: number): Example[] =>
    Array.from({ length: n }, () => {
      const x = [next() * 2 - 1, next() * 2 - 1, next() * 2 - 1];
      return { x, y: Array.from(forward(teacher, x)) };
    });
  const dataset = Buffer.from(
    rows(256)
      .map((r) => JSON.stringify(r))
      .join('\n'),
  );
  return {
    base,
    baseBytes,
    dataset,
    datasetSha256: `sha256:${createHash('sha256').update(dataset).digest('hex')}`,
    heldOut: rows(64),
  };
}

/** Uploads the base model and the dataset and registers the base as a ready version of a new model. */
export async function prepare(
  p: Pick<TestPlatform, 'objects' | 'registry' | 'db'>,
  tenant: { id: string; bucket: string },
  t: ReturnType<typeof task>,
  modelId = uniqueId('mlp'),
) {
  const key = `${tenant.id}/${modelId}`;
  const bucket = tenant.bucket;
  await p.objects.put({ bucket, key: `${key}/base/model.safetensors` }, t.baseBytes);
  await p.objects.put({ bucket, key: `${key}/train.jsonl` }, t.dataset);
  await p.registry.createModel(tenant.id, { id: modelId, name: modelId, description: '' });
  const artifactUri = `s3://${bucket}/${key}/base/model.safetensors`;
  await p.registry.insertVersion(p.db, tenant.id, {
    modelId,
    version: 'base',
    artifactUri,
    workflowId: `test/${modelId}/base`,
  });
  await p.registry.markVersionReady(tenant.id, modelId, 'base', {
    sizeBytes: t.baseBytes.length,
    checksum: `sha256:${createHash('sha256').update(t.baseBytes).digest('hex')}`,
    etag: null,
  });
  return { modelId, artifactUri, datasetUri: `s3://${bucket}/${key}/train.jsonl` };
}

export const HYPERPARAMETERS = {
  totalSteps: 60,
  batchSize: 32,
  learningRate: 0.5,
  loraRank: 4,
  loraAlpha: 8,
  checkpointEverySteps: 10,
  evalFraction: 0.1,
  seed: 7,
};

export function fineTuneClient(p: TestPlatform, tenant: TestTenant) {
  const status = async (
    id: string,
  ): Promise<FineTuneStatus & { workflowStatus: string; queue: { position: number } | null }> => {
    const res = await p.app.inject({ method: 'GET', url: `/v1/fine-tunes/${id}`, headers: bearer(tenant.keys.viewer) });
    if (res.statusCode !== 200) throw new Error(`GET /v1/fine-tunes/${id}: ${res.statusCode} ${res.body}`);
    return res.json();
  };
  return {
    post: (body: object, key = uniqueId('ft')) =>
      p.app.inject({
        method: 'POST',
        url: '/v1/fine-tunes',
        headers: { ...bearer(tenant.keys.developer), 'idempotency-key': key },
        payload: body,
      }),
    status,
    /** The first status `pred` accepts, or the run's end (failed, cancelled) for the caller's assertion to show. */
    until: (id: string, pred: (s: Awaited<ReturnType<typeof status>>) => boolean, what: string, timeoutMs = 180_000) =>
      eventually(
        `fine-tune ${id}: ${what}`,
        async () => {
          const s = await status(id);
          return (pred(s) || s.phase === 'failed' || s.phase === 'cancelled') && s;
        },
        timeoutMs,
      ),
  };
}

export const readObject = async (p: TestPlatform, uri: string): Promise<Buffer> => {
  const m = /^s3:\/\/([^/]+)\/(.+)$/.exec(uri)!;
  const chunks: Buffer[] = [];
  for await (const c of await p.objects.getStream({ bucket: m[1]!, key: m[2]! })) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
};
