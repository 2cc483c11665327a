import { createHash } from 'node:crypto';
import {
  BatchV1Api,
  CoreV1Api,
  KubernetesObjectApi,
  type KubeConfig,
  type V1EnvVar,
  type V1Job,
} from '@kubernetes/client-node';
import { deleteIfPresent, jobCondition } from '../kubernetes/client';
import { FIELD_MANAGER, labelValue, Labels, placed, type PodPlacement } from '../kubernetes/manifests';
import { restrictedContainer, restrictedPod } from '../kubernetes/pod-security';

/**
 * The conversion steps' Kubernetes Jobs: one pod, no retries inside Kubernetes (the workflow owns retries and
 * reports each failure), deleted by the TTL controller an hour after they finish.
 */
export const ConversionJobLabels = {
  /** The conversion's memo key (shortened): counts a conversion's Jobs, and proves a memoised request made none. */
  memoKey: 'llmhub.dev/conversion',
  step: 'llmhub.dev/conversion-step',
} as const;

export interface ConversionJobSpec {
  name: string;
  namespace: string;
  tenantId: string;
  modelId: string;
  version: string;
  workflowId: string;
  memoKey: string;
  step: string;
  image: string;
  /** The program and its flags (the images' entrypoint is python3). */
  args: string[];
  env: V1EnvVar[];
  podAnnotations: Record<string, string>;
  /** The cluster's node selector and tolerations (LLMHUB_CLUSTERS nodeSelector, tolerations). */
  placement?: PodPlacement;
  /** One whole GPU on a GPU node (the TensorRT engine build), optionally of one product. */
  gpu?: { product?: string };
  activeDeadlineSeconds: number;
}

export const memoLabelOf = (memoKey: string): string => memoKey.slice(0, 40);

/** A step's Job is named after the run and the step, so a retried attempt (a new worker after a crash) finds it again. */
export const conversionJobName = (workflowId: string, step: string): string =>
  `conv-${createHash('sha256').update(workflowId).digest('hex').slice(0, 10)}-${step}`;

export function renderConversionJob(s: ConversionJobSpec): V1Job {
  const labels = {
    [Labels.tenant]: labelValue(s.tenantId),
    [Labels.model]: labelValue(s.modelId),
    [Labels.version]: labelValue(s.version),
    [Labels.workflowId]: labelValue(s.workflowId),
    [ConversionJobLabels.memoKey]: memoLabelOf(s.memoKey),
    [ConversionJobLabels.step]: labelValue(s.step),
    'app.kubernetes.io/managed-by': FIELD_MANAGER,
  };
  // Label values are shortened and sanitised; the exact ids are kept in annotations.
  const annotations = { [Labels.workflowId]: s.workflowId, [Labels.model]: s.modelId, [Labels.version]: s.version };
  return {
    apiVersion: 'batch/v1',
    kind: 'Job',
    metadata: { name: s.name, namespace: s.namespace, labels, annotations },
    spec: {
      backoffLimit: 0,
      activeDeadlineSeconds: s.activeDeadlineSeconds,
      ttlSecondsAfterFinished: 3600,
      template: {
        metadata: { labels, annotations: { ...s.podAnnotations, ...annotations } },
        spec: {
          restartPolicy: 'Never',
          ...restrictedPod,
          containers: [
            {
              name: 'convert',
              securityContext: restrictedContainer,
              image: s.image,
              args: s.args,
              env: s.env,
              resources: s.gpu
                ? { requests: { cpu: '4', memory: '16Gi' }, limits: { 'nvidia.com/gpu': '1', memory: '16Gi' } }
                : { requests: { cpu: '1', memory: '2Gi' }, limits: { memory: '4Gi' } },
            },
          ],
          ...placed(
            s.gpu ? [{ key: 'nvidia.com/gpu', operator: 'Exists', effect: 'NoSchedule' }] : [],
            s.gpu?.product ? { 'nvidia.com/gpu.product': s.gpu.product } : {},
            s.placement ?? {},
          ),
        },
      },
    },
  };
}

export type JobState = { done: false; detail: string } | { done: true; succeeded: boolean; detail: string };

/** One look at the Job's terminal conditions (set by the Job controller from its pod's end). */
export async function jobState(kc: KubeConfig, namespace: string, name: string): Promise<JobState> {
  const job = await kc.makeApiClient(BatchV1Api).readNamespacedJob({ name, namespace });
  const failed = jobCondition(job, 'Failed');
  if (failed)
    return { done: true, succeeded: false, detail: `${failed.reason ?? 'Failed'}: ${failed.message ?? ''}`.trim() };
  if (jobCondition(job, 'Complete')) return { done: true, succeeded: true, detail: 'Complete' };
  return { done: false, detail: `active ${job.status?.active ?? 0}, ready ${job.status?.ready ?? 0}` };
}

/**
 * Deletes the run's Jobs that have not finished and waits, up to `waitMs`, until their pods are gone, so no program
 * of a cancelled or broken run still writes into the conversion's S3 prefix afterwards. Finished Jobs stay, as for
 * any run, until their TTL.
 */
export async function stopUnfinishedJobs(
  kc: KubeConfig,
  namespace: string,
  memoKey: string,
  workflowId: string,
  waitMs: number,
): Promise<void> {
  const jobs = await kc
    .makeApiClient(BatchV1Api)
    .listNamespacedJob({ namespace, labelSelector: `${ConversionJobLabels.memoKey}=${memoLabelOf(memoKey)}` });
  // The label holds a shortened workflow id; the annotation the exact one.
  const names = jobs.items
    .filter(
      (j) =>
        j.metadata?.annotations?.[Labels.workflowId] === workflowId &&
        !jobCondition(j, 'Complete') &&
        !jobCondition(j, 'Failed'),
    )
    .map((j) => j.metadata!.name!);
  const objects = KubernetesObjectApi.makeApiClient(kc);
  for (const name of names)
    await deleteIfPresent(objects, { apiVersion: 'batch/v1', kind: 'Job', metadata: { name, namespace } });
  const core = kc.makeApiClient(CoreV1Api);
  const until = Date.now() + waitMs;
  for (const name of names) {
    while (
      (await core.listNamespacedPod({ namespace, labelSelector: `batch.kubernetes.io/job-name=${name}` })).items
        .length > 0 &&
      Date.now() < until
    ) {
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  }
}
