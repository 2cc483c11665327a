import { Context } from '@temporalio/activity';
import { ClusterFailures } from '../../contracts/cluster';
import { ApplicationFailure } from '@temporalio/common';
import {
  BatchV1Api,
  CoreV1Api,
  KubernetesObjectApi,
  type KubeConfig,
  type V1EnvVar,
  type V1Job,
  type V1Pod,
} from '@kubernetes/client-node';
import { RunObjects, type FineTuneResources, type TrainerProgress } from '../../contracts/fine-tune';
import { parseObjectUri, type ObjectStore } from '../../common/objectstore';
import type { S3Credentials } from '../../common/storage-admin';
import type { StorageScopeStore } from '../../common/store/storage-scope';
import { requireInScope } from '../storage/scope';
import { deleteIfPresent, isStatus, jobCondition, serverSideApply } from './client';
import { ensureTenantNamespace, type TenantNamespaceDeps } from './tenant-namespace';
import { dnsLabel, FIELD_MANAGER, Labels, labelValue, placed, type PodPlacement } from './manifests';
import { restrictedContainer, restrictedPod } from './pod-security';
import { tenantS3Env } from './tenant-s3';

/** What the cluster runs the trainer with. */
export interface TrainerImage {
  image: string;
  /** What every trainer pod gets besides the run's contract and the tenant's S3 keys: S3 settings (s3SettingsEnv). */
  env: V1EnvVar[];
}

export interface TrainingJobDeps extends TenantNamespaceDeps {
  kubeConfigOf(cluster: string): KubeConfig | undefined;
  objects: ObjectStore;
  trainer: TrainerImage;
  storageScopes: StorageScopeStore;
  /** The tenant's own S3 keys, put into its namespace for its pods (undefined: no storage admin, none given). */
  tenantS3Credentials(tenantId: string): S3Credentials | undefined;
  /** Pod-template annotations of the cluster's Jobs (LLMHUB_CLUSTERS jobPodAnnotations; the local job runner's marker in tests). */
  jobPodAnnotationsOf(cluster: string): Record<string, string>;
  /** Where the cluster's pods go (LLMHUB_CLUSTERS nodeSelector, tolerations). */
  podPlacementOf(cluster: string): PodPlacement;
}

export interface TrainingJobSpec {
  cluster: string;
  tenantId: string;
  modelId: string;
  version: string;
  workflowId: string;
  fineTuneId: string;
  attempt: number;
  resources: FineTuneResources;
  /** The trainer contract's env (common/fine-tune.ts TrainerEnv): URIs and settings only. */
  env: Record<string, string>;
  deadlineSeconds: number;
}

export interface TrainingJobRef {
  cluster: string;
  namespace: string;
  name: string;
  /** Whose run it is: the run prefix watched must lie in this tenant's storage scope (absent in refs made before). */
  tenantId?: string;
}

export type TrainingJobState = 'pending' | 'running' | 'succeeded' | 'failed' | 'lost';

export interface TrainingJobObservation {
  state: TrainingJobState;
  podPhase: string | null;
  node: string | null;
  /** Why the pod is not running yet, as the scheduler says it (e.g. "0/6 nodes are available: … Insufficient nvidia.com/gpu"). */
  pendingReason: string | null;
  /** Why the Job ended, for failed and lost. */
  reason: string | null;
  progress: TrainerProgress | null;
}

const GPU_RESOURCE = 'nvidia.com/gpu';
export const trainingJobName = (fineTuneId: string, attempt: number): string => dnsLabel(`ft-${fineTuneId}-${attempt}`);

/**
 * The Job of one training attempt. backoffLimit 0: the workflow owns retries, because a resubmission must resume from
 * the latest checkpoint, which only the workflow knows. A new attempt is a new Job (name ends in the attempt).
 */
export function renderTrainingJob(
  spec: TrainingJobSpec,
  namespace: string,
  img: TrainerImage,
  podAnnotations: Record<string, string>,
  s3Keys: V1EnvVar[] = [],
  placement: PodPlacement = {},
): V1Job {
  const name = trainingJobName(spec.fineTuneId, spec.attempt);
  const labels = {
    [Labels.tenant]: labelValue(spec.tenantId),
    [Labels.model]: labelValue(spec.modelId),
    [Labels.version]: labelValue(spec.version),
    [Labels.workflowId]: labelValue(spec.workflowId),
    'llmhub.dev/fine-tune-attempt': String(spec.attempt),
    'app.kubernetes.io/managed-by': FIELD_MANAGER,
  };
  const annotations = { [Labels.workflowId]: spec.workflowId, [Labels.version]: spec.version };
  const r = spec.resources;
  const gpuResource = r.migProfile ? `nvidia.com/mig-${r.migProfile}` : GPU_RESOURCE;
  const limits = { cpu: r.cpu, memory: r.memory, [gpuResource]: String(r.gpuCount) };
  return {
    apiVersion: 'batch/v1',
    kind: 'Job',
    metadata: { name, namespace, labels, annotations },
    spec: {
      backoffLimit: 0,
      activeDeadlineSeconds: spec.deadlineSeconds,
      // Finished Jobs are deleted by the workflow; this only bounds what an interrupted one leaves behind.
      ttlSecondsAfterFinished: 86_400,
      template: {
        metadata: { labels, annotations: { ...podAnnotations, ...annotations } },
        spec: {
          restartPolicy: 'Never',
          ...restrictedPod,
          containers: [
            {
              name: 'trainer',
              securityContext: restrictedContainer,
              image: img.image,
              env: [...img.env, ...s3Keys, ...Object.entries(spec.env).map(([n, value]) => ({ name: n, value }))],
              resources: { requests: { cpu: r.cpu, memory: r.memory }, limits },
            },
          ],
          ...placed(
            [{ key: GPU_RESOURCE, operator: 'Exists', effect: 'NoSchedule' }],
            r.gpuProduct ? { 'nvidia.com/gpu.product': r.gpuProduct } : {},
            placement,
          ),
        },
      },
    },
  };
}

/** At most ~MAX_CURVE_POINTS evenly spaced points and the last one: the curve's shape, at a bounded payload size. */
const MAX_CURVE_POINTS = 200;
const downsample = (points: [number, number][]): [number, number][] => {
  if (points.length <= MAX_CURVE_POINTS) return points;
  const every = Math.ceil(points.length / MAX_CURVE_POINTS);
  return points.filter((_, i) => i % every === 0 || i === points.length - 1);
};

/**
 * Tells a lost pod (evicted, deleted with its node: the platform's fault, worth a resubmission) from a trainer that
 * failed (an exit code: resubmitting would fail the same way) and from a Job that ran out of time.
 */
function classifyFailure(job: V1Job, pods: V1Pod[]): { state: 'failed' | 'lost'; reason: string } {
  const failed = jobCondition(job, 'Failed');
  if (failed?.reason === 'DeadlineExceeded')
    return { state: 'failed', reason: `the Job ran past its deadline: ${failed.message ?? ''}`.trim() };
  const pod = pods.at(-1);
  const disrupted = pod?.status?.conditions?.find((c) => c.type === 'DisruptionTarget' && c.status === 'True');
  const exit = pod?.status?.containerStatuses?.[0]?.state?.terminated;
  if (pod && !disrupted && !pod.metadata?.deletionTimestamp && exit && exit.exitCode !== 0) {
    return {
      state: 'failed',
      reason: `the trainer exited with code ${exit.exitCode}${exit.message ? `: ${exit.message}` : ''}`,
    };
  }
  const why = disrupted
    ? `${disrupted.reason}: ${disrupted.message ?? ''}`
    : pod
      ? 'its pod was deleted'
      : 'its pod is gone (evicted or its node was lost)';
  return { state: 'lost', reason: why.trim() };
}

export const createTrainingJobActivities = (deps: TrainingJobDeps) => {
  const clientsOf = (cluster: string) => {
    const kc = deps.kubeConfigOf(cluster);
    if (!kc)
      throw ApplicationFailure.nonRetryable(`cluster '${cluster}' is not configured`, ClusterFailures.unknownCluster);
    return {
      objects: KubernetesObjectApi.makeApiClient(kc),
      batch: kc.makeApiClient(BatchV1Api),
      core: kc.makeApiClient(CoreV1Api),
    };
  };
  const readProgress = async (runPrefix: string): Promise<TrainerProgress | null> => {
    const prefix = parseObjectUri(runPrefix);
    const ref = { bucket: prefix.bucket, key: `${prefix.key}${RunObjects.progress}` };
    if (!(await deps.objects.head(ref))) return null;
    const chunks: Buffer[] = [];
    for await (const c of await deps.objects.getStream(ref)) chunks.push(c as Buffer);
    try {
      return JSON.parse(Buffer.concat(chunks).toString('utf8')) as TrainerProgress;
    } catch {
      // Caught between two writes of a store without atomic puts; the next look reads it whole.
      return null;
    }
  };

  async function observe(ref: TrainingJobRef, runPrefix: string): Promise<TrainingJobObservation> {
    const { batch, core } = clientsOf(ref.cluster);
    const read = await readProgress(runPrefix);
    const progress = read && { ...read, loss: downsample(read.loss) };
    let job: V1Job;
    try {
      job = await batch.readNamespacedJob({ name: ref.name, namespace: ref.namespace });
    } catch (err) {
      if (!isStatus(err, 404)) throw err;
      return {
        state: 'lost',
        podPhase: null,
        node: null,
        pendingReason: null,
        reason: 'the Job was deleted',
        progress,
      };
    }
    const pods = (
      await core.listNamespacedPod({
        namespace: ref.namespace,
        labelSelector: `batch.kubernetes.io/job-name=${ref.name}`,
      })
    ).items.sort(
      (a, b) => (a.metadata?.creationTimestamp?.getTime() ?? 0) - (b.metadata?.creationTimestamp?.getTime() ?? 0),
    );
    const pod = pods.at(-1);
    const seen = { podPhase: pod?.status?.phase ?? null, node: pod?.spec?.nodeName ?? null, progress };
    if (jobCondition(job, 'Complete')) return { state: 'succeeded', ...seen, pendingReason: null, reason: null };
    if (jobCondition(job, 'Failed')) return { ...classifyFailure(job, pods), ...seen, pendingReason: null };
    const unscheduled = pod?.status?.conditions?.find((c) => c.type === 'PodScheduled' && c.status === 'False');
    const running = pod?.status?.phase === 'Running';
    return {
      state: running ? 'running' : 'pending',
      ...seen,
      pendingReason: running ? null : (unscheduled?.message ?? unscheduled?.reason ?? null),
      reason: null,
    };
  }

  return {
    /** Server-side applies the tenant's namespace and the attempt's Job (idempotent: re-applying changes nothing). */
    async applyTrainingJob(spec: TrainingJobSpec): Promise<TrainingJobRef> {
      const { objects } = clientsOf(spec.cluster);
      const namespace = await ensureTenantNamespace(objects, spec.tenantId, deps);
      const s3Keys = await tenantS3Env(objects, namespace, spec.tenantId, deps.tenantS3Credentials(spec.tenantId));
      const job = renderTrainingJob(
        spec,
        namespace,
        deps.trainer,
        deps.jobPodAnnotationsOf(spec.cluster),
        s3Keys,
        deps.podPlacementOf(spec.cluster),
      );
      await serverSideApply(objects, job);
      return { cluster: spec.cluster, namespace, name: job.metadata!.name!, tenantId: spec.tenantId };
    },

    /**
     * Watches the Job and the trainer's progress.json, heartbeating both. Returns when the Job ended, or when what
     * it sees differs from `last` (progress, pod phase, pending reason) and `minReportMs` passed, so the workflow's
     * status follows the run without one history event per training step.
     */
    async watchTrainingJob(
      ref: TrainingJobRef,
      runPrefix: string,
      last: { state: TrainingJobState; step: number; pendingReason: string | null } | null,
      minReportMs: number,
    ): Promise<TrainingJobObservation> {
      // The platform's credential reads the trainer's progress: only from the run's own tenant's bucket.
      await requireInScope(deps.storageScopes, ref.tenantId, [runPrefix], 'write');
      const ctx = Context.current();
      const started = Date.now();
      for (;;) {
        const o = await observe(ref, runPrefix);
        ctx.heartbeat({
          state: o.state,
          podPhase: o.podPhase,
          pendingReason: o.pendingReason,
          step: o.progress?.step ?? 0,
          totalSteps: o.progress?.totalSteps ?? null,
          loss: o.progress?.loss.at(-1)?.[1] ?? null,
        });
        if (o.state === 'succeeded' || o.state === 'failed' || o.state === 'lost') return o;
        const changed =
          !last ||
          last.state !== o.state ||
          last.step !== (o.progress?.step ?? 0) ||
          last.pendingReason !== o.pendingReason;
        if ((changed && Date.now() - started >= minReportMs) || Date.now() - started >= 10 * 60_000) return o;
        await ctx.sleep(500);
      }
    },

    /** Idempotent; the pods go with it (foreground would wait for them, which a lost node may never confirm). */
    async deleteTrainingJob(ref: TrainingJobRef): Promise<void> {
      const { objects } = clientsOf(ref.cluster);
      await deleteIfPresent(objects, {
        apiVersion: 'batch/v1',
        kind: 'Job',
        metadata: { name: ref.name, namespace: ref.namespace },
      });
    },
  };
};

export type TrainingJobActivities = ReturnType<typeof createTrainingJobActivities>;
