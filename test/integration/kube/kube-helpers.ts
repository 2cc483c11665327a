// Shared helpers for the tests against the local (kwok) cluster. Every wait is a bounded poll
// on a condition read through the API: the machine may be loaded, so nothing asserts on timing.
import { pollFor } from '../../../deploy/dev/process';
import { randomBytes } from 'node:crypto';
import {
  ApiException,
  AppsV1Api,
  BatchV1Api,
  CoordinationV1Api,
  CoreV1Api,
  KubernetesObjectApi,
  type KubeConfig,
  type V1Pod,
} from '@kubernetes/client-node';
import { testKubeConfig } from '../../../deploy/dev/kube/cluster';
import { tenantNamespacePolicyOf } from '../../../activities/kubernetes/tenant-namespace';
import { loadConfig } from '../../../common/config';
import { DEFAULT_GPU_QUOTA } from '../../../contracts/fine-tune';

export interface Kube {
  kc: KubeConfig;
  core: CoreV1Api;
  apps: AppsV1Api;
  batch: BatchV1Api;
  coordination: CoordinationV1Api;
  objects: KubernetesObjectApi;
}

export function kube(): Kube {
  const kc = testKubeConfig();
  return {
    kc,
    core: kc.makeApiClient(CoreV1Api),
    apps: kc.makeApiClient(AppsV1Api),
    batch: kc.makeApiClient(BatchV1Api),
    coordination: kc.makeApiClient(CoordinationV1Api),
    objects: KubernetesObjectApi.makeApiClient(kc),
  };
}

export const FIELD_MANAGER = 'llmhub';
/** Annotation read by deploy/dev/kube/kwok-stages.yaml. */
export const BEHAVIOUR = 'llmhub.dev/kwok-behaviour';
export const GPU_TOLERATION = { key: 'nvidia.com/gpu', operator: 'Exists', effect: 'NoSchedule' };
export const IMAGE = 'registry.invalid/llmhub/fake:1';

export function uniqueName(prefix: string): string {
  return `${prefix}-${randomBytes(3).toString('hex')}`;
}

export function isNotFound(err: unknown): boolean {
  return err instanceof ApiException && err.code === 404;
}

export interface WaitOptions {
  timeoutMs?: number;
  intervalMs?: number;
}

/** Waits on a condition (see pollFor); errors from the probe count as "not yet", an API blip under load is no failure. */
export const waitFor = <T>(
  what: string,
  probe: () => Promise<T | undefined | false>,
  { timeoutMs = 120_000, intervalMs = 500 }: WaitOptions = {},
): Promise<T> => pollFor(what, probe, timeoutMs, intervalMs);

export function podCondition(pod: V1Pod, type: string): string | undefined {
  return pod.status?.conditions?.find((c) => c.type === type)?.status;
}

export function isPodReady(pod: V1Pod): boolean {
  return podCondition(pod, 'Ready') === 'True';
}

/**
 * Creates a namespace and waits for its default ServiceAccount: the ServiceAccount admission
 * plugin rejects pods created before the controller-manager has made it.
 */
export async function createNamespace(k: Kube, prefix: string): Promise<string> {
  const name = uniqueName(prefix);
  await k.core.createNamespace({ body: { metadata: { name, labels: { 'llmhub.dev/test': 'kube' } } } });
  await waitFor(`default service account in ${name}`, async () => {
    await k.core.readNamespacedServiceAccount({ name: 'default', namespace: name });
    return true;
  });
  return name;
}

/** Starts namespace deletion; the namespace controller and kwok finish it in the background. */
export async function deleteNamespace(k: Kube, name: string): Promise<void> {
  try {
    await k.core.deleteNamespace({ name });
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
}

export async function listPods(k: Kube, namespace: string, labelSelector?: string): Promise<V1Pod[]> {
  const list = await k.core.listNamespacedPod({ namespace, labelSelector });
  return list.items;
}

export async function readPod(k: Kube, namespace: string, name: string): Promise<V1Pod> {
  return k.core.readNamespacedPod({ name, namespace });
}

/** What a worker with default configuration hands the activities for tenant namespaces, with a GPU quota of `gpus`. */
export const tenantNamespaceDeps = (gpus = DEFAULT_GPU_QUOTA) => ({
  gpuQuotaOf: () => Promise.resolve(gpus),
  tenantNamespacePolicy: tenantNamespacePolicyOf(loadConfig({ DATABASE_URL: 'postgres://unused' })),
});
