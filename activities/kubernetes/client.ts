import { ApplicationFailure } from '@temporalio/common';
import { ClusterFailures } from '../../contracts/cluster';
import {
  ApiException,
  PatchStrategy,
  type KubernetesObject,
  type KubernetesObjectApi,
  type V1Job,
} from '@kubernetes/client-node';
import { FIELD_MANAGER } from './manifests';
import { TENANT_NAMESPACE_LABELS } from './pod-security';

export const isStatus = (err: unknown, ...codes: number[]): boolean =>
  err instanceof ApiException && codes.includes(err.code);

/** Server-side apply with the platform's field manager: re-applying an unchanged object writes nothing. */
export async function serverSideApply<T extends KubernetesObject>(objects: KubernetesObjectApi, obj: T): Promise<T> {
  try {
    return await objects.patch(obj, undefined, undefined, FIELD_MANAGER, true, PatchStrategy.ServerSideApply);
  } catch (err) {
    // 400/422 is a manifest the API server will never accept (bad annotation, quantity, name): no retry helps.
    if (isStatus(err, 400, 422))
      throw ApplicationFailure.nonRetryable(
        `${obj.kind} ${obj.metadata?.name} rejected: ${(err as ApiException<string>).body}`,
        ClusterFailures.invalidManifest,
      );
    throw err;
  }
}

/** Idempotent: deleting what is already gone succeeds. Dependents (a Job's pods) go in the background. */
export async function deleteIfPresent(objects: KubernetesObjectApi, obj: KubernetesObject): Promise<void> {
  try {
    await objects.delete(obj, undefined, undefined, undefined, undefined, 'Background');
  } catch (err) {
    if (!isStatus(err, 404)) throw err;
  }
}

/**
 * The namespace a tenant's objects live in, labelled so operators can list them and so the API server enforces the
 * restricted Pod Security Standard on every pod in it.
 */
export const tenantNamespace = (name: string): KubernetesObject => ({
  apiVersion: 'v1',
  kind: 'Namespace',
  metadata: { name, labels: { 'llmhub.dev/tenant-namespace': 'true', ...TENANT_NAMESPACE_LABELS } },
});

/** A Job's condition of this type when it holds (status True): `Complete` and `Failed` are set by the Job controller once its pods end. */
export const jobCondition = (job: V1Job, type: 'Complete' | 'Failed') =>
  job.status?.conditions?.find((c) => c.type === type && c.status === 'True');
