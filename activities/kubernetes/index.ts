import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import { ApiException, AppsV1Api, KubernetesObjectApi, PatchStrategy, type KubeConfig, type KubernetesObject, type V1Deployment } from '@kubernetes/client-node';
import type { EndpointResolver } from './endpoints';
import { FIELD_MANAGER, renderModelServer, SERVING_PORT, servingName, type ModelServerImage, type ModelServerSpec } from './manifests';

/** Failure types retrying cannot fix; the rollout workflow lists them as non-retryable. */
export const KubernetesErrors = {
  readinessTimeout: 'ReadinessTimeout',
  invalidManifest: 'InvalidManifest',
  unknownCluster: 'UnknownCluster',
} as const;

export interface KubernetesActivityDeps {
  /** The clusters named in configuration (LLMHUB_CLUSTERS); loaded lazily so a worker starts without a reachable cluster. */
  kubeConfigOf(cluster: string): KubeConfig | undefined;
  namespaceOf(tenantId: string): string;
  modelServer: ModelServerImage;
  endpointOf: EndpointResolver;
}

/** Where an applied version lives; what the workflow keeps to steer and remove it. */
export interface ServedRef {
  cluster: string;
  namespace: string;
  name: string;
}

export interface AppliedVersion extends ServedRef {
  endpoint: string;
}

const isStatus = (err: unknown, ...codes: number[]) => err instanceof ApiException && codes.includes(err.code);

/** Settled: the controller has seen this generation and every desired replica is updated and available. */
const isReady = (d: V1Deployment): boolean => {
  const want = d.spec?.replicas ?? 1;
  return d.status?.observedGeneration === d.metadata?.generation && (d.status?.updatedReplicas ?? 0) === want && (d.status?.availableReplicas ?? 0) === want;
};

export const createKubernetesActivities = (deps: KubernetesActivityDeps) => {
  const clients = new Map<string, { objects: KubernetesObjectApi; apps: AppsV1Api }>();
  const clientsOf = (cluster: string) => {
    let c = clients.get(cluster);
    if (!c) {
      const kc = deps.kubeConfigOf(cluster);
      if (!kc) throw ApplicationFailure.nonRetryable(`cluster '${cluster}' is not configured`, KubernetesErrors.unknownCluster);
      c = { objects: KubernetesObjectApi.makeApiClient(kc), apps: kc.makeApiClient(AppsV1Api) };
      clients.set(cluster, c);
    }
    return c;
  };
  const apply = async <T extends KubernetesObject>(cluster: string, obj: T): Promise<T> => {
    try {
      return await clientsOf(cluster).objects.patch(obj, undefined, undefined, FIELD_MANAGER, true, PatchStrategy.ServerSideApply);
    } catch (err) {
      // 400/422 is a manifest the API server will never accept (bad annotation, quantity, name): no retry helps.
      if (isStatus(err, 400, 422)) throw ApplicationFailure.nonRetryable(`${obj.kind} ${obj.metadata?.name} rejected: ${(err as ApiException<string>).body}`, KubernetesErrors.invalidManifest);
      throw err;
    }
  };
  const deleteIfPresent = async (cluster: string, obj: KubernetesObject): Promise<void> => {
    try {
      await clientsOf(cluster).objects.delete(obj, undefined, undefined, undefined, undefined, 'Background');
    } catch (err) {
      if (!isStatus(err, 404)) throw err;
    }
  };

  return {
    /** Server-side applies the version's namespace, Deployment and Service; re-applying an unchanged spec writes nothing. */
    async applyModelVersion(spec: ModelServerSpec): Promise<AppliedVersion> {
      const namespace = deps.namespaceOf(spec.tenantId);
      const { deployment, service } = renderModelServer(spec, namespace, deps.modelServer);
      await apply(spec.cluster, { apiVersion: 'v1', kind: 'Namespace', metadata: { name: namespace, labels: { 'llmhub.dev/tenant-namespace': 'true' } } });
      await apply(spec.cluster, deployment);
      await apply(spec.cluster, service);
      const name = servingName(spec.modelId, spec.version);
      const endpoint = deps.endpointOf({ tenantId: spec.tenantId, modelId: spec.modelId, version: spec.version, namespace, service: name, port: SERVING_PORT });
      return { cluster: spec.cluster, namespace, name, endpoint };
    },

    /**
     * Waits until the Deployment is available, heartbeating its progress. The deadline counts from the first attempt
     * (kept in the heartbeat details), so retries after a worker crash never extend it.
     */
    async waitModelVersionReady(ref: ServedRef, timeoutMs: number): Promise<{ readyReplicas: number }> {
      const ctx = Context.current();
      const startedAt = (ctx.info.heartbeatDetails as { startedAt?: number } | undefined)?.startedAt ?? Date.now();
      const { apps } = clientsOf(ref.cluster);
      for (;;) {
        const d = await apps.readNamespacedDeployment({ name: ref.name, namespace: ref.namespace });
        const readyReplicas = d.status?.readyReplicas ?? 0;
        if (isReady(d)) return { readyReplicas };
        ctx.heartbeat({ startedAt, readyReplicas, waitedMs: Date.now() - startedAt });
        if (Date.now() - startedAt >= timeoutMs) {
          throw ApplicationFailure.nonRetryable(
            `${ref.namespace}/${ref.name} was not ready within ${Math.round(timeoutMs / 1000)} s (${readyReplicas}/${d.spec?.replicas ?? 1} replicas ready)`,
            KubernetesErrors.readinessTimeout,
          );
        }
        // ctx.sleep ends early when the workflow cancels this activity (abort), seen through the heartbeat.
        await ctx.sleep(1_000);
      }
    },

    /** A merge patch of replicas only, so the applied spec keeps its field ownership; a missing Deployment has nothing to scale. */
    async scaleModelVersion(ref: ServedRef, replicas: number): Promise<void> {
      try {
        await clientsOf(ref.cluster).objects.patch(
          { apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: ref.name, namespace: ref.namespace }, spec: { replicas } },
          undefined,
          undefined,
          FIELD_MANAGER,
          undefined,
          PatchStrategy.MergePatch,
        );
      } catch (err) {
        if (!isStatus(err, 404)) throw err;
      }
    },

    /** Idempotent: removing what is already gone succeeds. */
    async deleteModelVersion(ref: ServedRef): Promise<void> {
      await deleteIfPresent(ref.cluster, { apiVersion: 'v1', kind: 'Service', metadata: { name: ref.name, namespace: ref.namespace } });
      await deleteIfPresent(ref.cluster, { apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: ref.name, namespace: ref.namespace } });
    },

    /** Where a version of the tenant's model is (or would be) served, for steering a version this run did not apply. */
    async servedRefOf(cluster: string, tenantId: string, modelId: string, version: string): Promise<ServedRef> {
      return { cluster, namespace: deps.namespaceOf(tenantId), name: servingName(modelId, version) };
    },
  };
};

export type KubernetesActivities = ReturnType<typeof createKubernetesActivities>;
