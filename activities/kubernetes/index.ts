import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import {
  AppsV1Api,
  CoreV1Api,
  KubernetesObjectApi,
  PatchStrategy,
  setHeaderOptions,
  type KubeConfig,
  type KubernetesObject,
  type V1Deployment,
} from '@kubernetes/client-node';
import type { EndpointResolver } from './endpoints';
import {
  AUTOSCALER_FIELD_MANAGER,
  FIELD_MANAGER,
  Labels,
  labelValue,
  renderModelServer,
  SERVING_PORT,
  servingName,
  servingSelector,
  type ModelServerImage,
  type ModelServerSpec,
  type PodPlacement,
} from './manifests';
import { ClusterFailures } from '../../contracts/cluster';
import { deleteIfPresent, isStatus, serverSideApply } from './client';
import { ensureTenantNamespace, type TenantNamespaceDeps } from './tenant-namespace';
import type { S3Credentials } from '../../common/storage-admin';
import { tenantS3Env } from './tenant-s3';

export interface KubernetesActivityDeps extends TenantNamespaceDeps {
  /** The clusters named in configuration (LLMHUB_CLUSTERS); loaded lazily so a worker starts without a reachable cluster. */
  kubeConfigOf(cluster: string): KubeConfig | undefined;
  /**
   * The runtime of a cluster that does not serve versions as Kubernetes Deployments; undefined: a Kubernetes cluster.
   * Handed in by the stack that offers one (the dev stack's local processes, deploy/dev/local-runtime.ts).
   */
  modelRuntimeOf(cluster: string): ModelRuntime | undefined;
  modelServer: ModelServerImage;
  /** The tenant's own S3 keys, put into its namespace for its model servers (undefined: no storage admin, none given). */
  tenantS3Credentials(tenantId: string): S3Credentials | undefined;
  /** Prefixed pod label/annotation keys tenants may set (LLMHUB_POD_METADATA_KEYS). */
  podMetadataKeys: readonly string[];
  endpointOf: EndpointResolver;
  /** Where the cluster's pods go (LLMHUB_CLUSTERS nodeSelector/tolerations). */
  podPlacementOf(cluster: string): PodPlacement;
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

/**
 * How one cluster serves model versions. The activities below stay the same whatever the runtime, because the
 * workflow calls them by name and recorded histories must replay; each delegates to its cluster's runtime.
 */
export interface ModelRuntime {
  /** Starts serving the version (idempotent: re-applying a served version keeps it) and returns its endpoint (…/v1). */
  apply(spec: ModelServerSpec, ref: ServedRef): Promise<string>;
  /** The name the version is already served under, if it is (found by its labels, not its name). */
  existingName?(namespace: string, tenantId: string, modelId: string, version: string): Promise<string | undefined>;
  /** One look at the version's readiness; waitModelVersionReady does the waiting, heartbeats and deadline. */
  readiness(ref: ServedRef): Promise<{ ready: boolean; readyReplicas: number; desiredReplicas: number }>;
  /** A missing version has nothing to scale. */
  scale(ref: ServedRef, replicas: number): Promise<void>;
  /** Replicas wanted and ready now; undefined: nothing of the version is there (never applied, deleted, process gone). */
  replicas(ref: ServedRef): Promise<{ desired: number; ready: number } | undefined>;
  /**
   * The autoscaler's write of the version's replicas (starting it again when nothing of it is left), under its own
   * field manager so the rollout's apply and it never own the same field. Returns the version's endpoint.
   */
  setReplicas(spec: ModelServerSpec, ref: ServedRef, replicas: number): Promise<string>;
  /** Idempotent: removing what is already gone succeeds. */
  delete(ref: ServedRef): Promise<void>;
}

/** Settled: the controller has seen this generation and every desired replica is updated and available. */
const isReady = (d: V1Deployment): boolean => {
  const want = d.spec?.replicas ?? 1;
  return (
    d.status?.observedGeneration === d.metadata?.generation &&
    (d.status?.updatedReplicas ?? 0) === want &&
    (d.status?.availableReplicas ?? 0) === want
  );
};

/** A Deployment and Service per version on the cluster of `kc`. */
function kubernetesRuntime(kc: KubeConfig, deps: KubernetesActivityDeps): ModelRuntime {
  const objects = KubernetesObjectApi.makeApiClient(kc);
  const apps = kc.makeApiClient(AppsV1Api);
  const core = kc.makeApiClient(CoreV1Api);
  const apply = <T extends KubernetesObject>(obj: T): Promise<T> => serverSideApply(objects, obj);
  const namespaceExists = (name: string): Promise<boolean> =>
    core.readNamespace({ name }).then(
      () => true,
      (err: unknown) => {
        if (isStatus(err, 404)) return false;
        throw err;
      },
    );
  /**
   * A tenant names Secrets its model server reads; only those labelled for its tenant, so it cannot mount what the
   * platform (or another tenant mapped to the same namespace) keeps there.
   */
  const checkSecrets = async (spec: ModelServerSpec, namespace: string) => {
    for (const [env, value] of Object.entries(spec.env)) {
      if (typeof value === 'string') continue;
      const name = value.secretRef.name;
      let labels: Record<string, string> | undefined;
      try {
        labels = (await core.readNamespacedSecret({ name, namespace })).metadata?.labels;
      } catch (err) {
        if (!isStatus(err, 404)) throw err;
        throw ApplicationFailure.nonRetryable(
          `env ${env}: Secret '${name}' does not exist in ${namespace}`,
          ClusterFailures.invalidManifest,
        );
      }
      if (labels?.[Labels.tenant] !== labelValue(spec.tenantId)) {
        throw ApplicationFailure.nonRetryable(
          `env ${env}: Secret '${name}' is not labelled ${Labels.tenant}=${labelValue(spec.tenantId)}; only the tenant's own Secrets can be referenced`,
          ClusterFailures.invalidManifest,
        );
      }
    }
  };
  const endpointOf = (spec: ModelServerSpec, ref: ServedRef, clusterIP: string | undefined) =>
    deps.endpointOf({
      cluster: ref.cluster,
      clusterIP,
      tenantId: spec.tenantId,
      modelId: spec.modelId,
      version: spec.version,
      namespace: ref.namespace,
      service: ref.name,
      port: SERVING_PORT,
    });
  const runtime: ModelRuntime = {
    /** Server-side applies the version's namespace, Deployment and Service; re-applying an unchanged spec writes nothing. */
    async apply(spec, ref) {
      await ensureTenantNamespace(objects, spec.tenantId, deps);
      const s3Keys = await tenantS3Env(objects, ref.namespace, spec.tenantId, deps.tenantS3Credentials(spec.tenantId));
      const { deployment, service } = renderModelServer(
        spec,
        ref,
        deps.modelServer,
        deps.podMetadataKeys,
        s3Keys,
        deps.podPlacementOf(ref.cluster),
      );
      await checkSecrets(spec, ref.namespace);
      await apply(deployment);
      const applied = await apply(service);
      return endpointOf(spec, ref, applied.spec?.clusterIP);
    },
    async replicas(ref) {
      try {
        const d = await apps.readNamespacedDeployment({ name: ref.name, namespace: ref.namespace });
        return { desired: d.spec?.replicas ?? 1, ready: d.status?.readyReplicas ?? 0 };
      } catch (err) {
        if (isStatus(err, 404)) return undefined;
        throw err;
      }
    },
    /**
     * The scale subresource, by server-side apply: an update (PUT) of replicas that no manager owns yet, as the
     * rollout's apply leaves them for an autoscaled version, is recorded in no managedFields entry, so the autoscaler
     * would own nothing. Forced: replicas are the autoscaler's alone. A Deployment deleted meanwhile is applied again.
     */
    async setReplicas(spec, ref, replicas) {
      if (!(await runtime.replicas(ref))) await runtime.apply(spec, ref);
      await apps.patchNamespacedDeploymentScale(
        {
          name: ref.name,
          namespace: ref.namespace,
          fieldManager: AUTOSCALER_FIELD_MANAGER,
          force: true,
          body: {
            apiVersion: 'autoscaling/v1',
            kind: 'Scale',
            metadata: { name: ref.name, namespace: ref.namespace },
            spec: { replicas },
          },
        },
        setHeaderOptions('Content-Type', PatchStrategy.ServerSideApply),
      );
      const service = await core.readNamespacedService({ name: ref.name, namespace: ref.namespace });
      return endpointOf(spec, ref, service.spec?.clusterIP);
    },
    async readiness(ref) {
      const d = await apps.readNamespacedDeployment({ name: ref.name, namespace: ref.namespace });
      return { ready: isReady(d), readyReplicas: d.status?.readyReplicas ?? 0, desiredReplicas: d.spec?.replicas ?? 1 };
    },
    /** A merge patch of replicas only, so the applied spec keeps its field ownership. */
    async scale(ref, replicas) {
      try {
        await objects.patch(
          {
            apiVersion: 'apps/v1',
            kind: 'Deployment',
            metadata: { name: ref.name, namespace: ref.namespace },
            spec: { replicas },
          },
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
    async existingName(namespace, tenantId, modelId, version) {
      const selector = Object.entries(servingSelector(tenantId, modelId, version))
        .map(([k, v]) => `${k}=${v}`)
        .join(',');
      try {
        const found = await apps.listNamespacedDeployment({ namespace, labelSelector: selector });
        return found.items[0]?.metadata?.name;
      } catch (err) {
        if (isStatus(err, 404)) return undefined;
        // Before the tenant's first version its namespace does not exist, nor the RoleBinding that lets the worker
        // list there: with only the chart's RBAC (nothing cluster-wide) that is a 403, where an admin sees no items.
        if (isStatus(err, 403) && !(await namespaceExists(namespace))) return undefined;
        throw err;
      }
    },
    async delete(ref) {
      await deleteIfPresent(objects, {
        apiVersion: 'v1',
        kind: 'Service',
        metadata: { name: ref.name, namespace: ref.namespace },
      });
      await deleteIfPresent(objects, {
        apiVersion: 'apps/v1',
        kind: 'Deployment',
        metadata: { name: ref.name, namespace: ref.namespace },
      });
    },
  };
  return runtime;
}

export const createKubernetesActivities = (deps: KubernetesActivityDeps) => {
  const runtimes = new Map<string, ModelRuntime>();
  const runtimeOf = (cluster: string): ModelRuntime => {
    let r = runtimes.get(cluster);
    if (!r) {
      r = deps.modelRuntimeOf(cluster);
      if (!r) {
        const kc = deps.kubeConfigOf(cluster);
        if (!kc)
          throw ApplicationFailure.nonRetryable(
            `cluster '${cluster}' is not configured`,
            ClusterFailures.unknownCluster,
          );
        r = kubernetesRuntime(kc, deps);
      }
      runtimes.set(cluster, r);
    }
    return r;
  };

  /** Where a version is served: under the name it already has (older names too), else its own name. */
  const refOf = async (cluster: string, tenantId: string, modelId: string, version: string): Promise<ServedRef> => {
    const namespace = deps.namespaceOf(tenantId);
    const existing = await runtimeOf(cluster).existingName?.(namespace, tenantId, modelId, version);
    return { cluster, namespace, name: existing ?? servingName(modelId, version) };
  };

  return {
    async applyModelVersion(spec: ModelServerSpec): Promise<AppliedVersion> {
      const ref = await refOf(spec.cluster, spec.tenantId, spec.modelId, spec.version);
      return { ...ref, endpoint: await runtimeOf(spec.cluster).apply(spec, ref) };
    },

    /**
     * Waits until the version is ready, heartbeating its progress. The deadline counts from the first attempt
     * (kept in the heartbeat details), so retries after a worker crash never extend it.
     */
    async waitModelVersionReady(ref: ServedRef, timeoutMs: number): Promise<{ readyReplicas: number }> {
      const ctx = Context.current();
      const startedAt = (ctx.info.heartbeatDetails as { startedAt?: number } | undefined)?.startedAt ?? Date.now();
      const runtime = runtimeOf(ref.cluster);
      for (;;) {
        const { ready, readyReplicas, desiredReplicas } = await runtime.readiness(ref);
        if (ready) return { readyReplicas };
        ctx.heartbeat({ startedAt, readyReplicas, waitedMs: Date.now() - startedAt });
        if (Date.now() - startedAt >= timeoutMs) {
          throw ApplicationFailure.nonRetryable(
            `${ref.namespace}/${ref.name} was not ready within ${Math.round(timeoutMs / 1000)} s (${readyReplicas}/${desiredReplicas} replicas ready)`,
            ClusterFailures.readinessTimeout,
          );
        }
        // ctx.sleep ends early when the workflow cancels this activity (abort), seen through the heartbeat.
        await ctx.sleep(1_000);
      }
    },

    /** Replicas wanted and ready of a served version; 0 and 0 when nothing of it is there. */
    async servedReplicas(ref: ServedRef): Promise<{ desired: number; ready: number }> {
      return (await runtimeOf(ref.cluster).replicas(ref)) ?? { desired: 0, ready: 0 };
    },

    /** The autoscaler's write of a version's replicas; answers where it is served and its endpoint. */
    async setServedReplicas(spec: ModelServerSpec, replicas: number): Promise<AppliedVersion> {
      const ref = await refOf(spec.cluster, spec.tenantId, spec.modelId, spec.version);
      return { ...ref, endpoint: await runtimeOf(spec.cluster).setReplicas(spec, ref, replicas) };
    },

    async scaleModelVersion(ref: ServedRef, replicas: number): Promise<void> {
      await runtimeOf(ref.cluster).scale(ref, replicas);
    },

    async deleteModelVersion(ref: ServedRef): Promise<void> {
      await runtimeOf(ref.cluster).delete(ref);
    },

    /** Where a version of the tenant's model is (or would be) served, for steering a version this run did not apply. */
    async servedRefOf(cluster: string, tenantId: string, modelId: string, version: string): Promise<ServedRef> {
      return refOf(cluster, tenantId, modelId, version);
    },
  };
};

export type KubernetesActivities = ReturnType<typeof createKubernetesActivities>;
