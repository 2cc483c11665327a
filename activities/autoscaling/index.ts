import type { Pool } from 'pg';
import type { AutoscalingSpec } from '../../contracts/autoscaling';
import type { GatewayMetricsStore, VersionLoad } from '../../common/store/gateway-metrics';
import { GpuQuotaStore, servingClaimKey } from '../../common/store/gpu-quota';
import { RolloutLockStore } from '../../common/store/rollouts';
import type { RoutingStore } from '../../common/store/routing';
import { ServedVersionStore } from '../../common/store/served-versions';
import type { ModelServerSpec } from '../kubernetes/manifests';

export interface AutoscalingActivityDeps {
  db: Pool;
  routing: RoutingStore;
  gatewayMetrics: GatewayMetricsStore;
  /** How often each autoscaler decides, and the window its load is averaged over (LLMHUB_AUTOSCALE_*). */
  autoscale: { syncMs: number; windowMs: number };
}

export interface ServedKey {
  tenantId: string;
  modelId: string;
  version: string;
}

/** One look at a served version, everything an autoscaler pass decides on except its replicas. */
export interface AutoscalerView {
  /** Null: no rollout recorded the version (deployed before autoscaling existed), so nothing can start it. */
  spec: ModelServerSpec | null;
  autoscaling: AutoscalingSpec | null;
  cold: boolean;
  /** The deployment id of a rollout running on the model; the autoscaler leaves replicas to it meanwhile. */
  rolloutHolder: string | null;
  /** The version is the model's stable or canary. */
  routed: boolean;
  load: VersionLoad;
  syncMs: number;
  now: number;
}

export const createAutoscalingActivities = ({ db, routing, gatewayMetrics, autoscale }: AutoscalingActivityDeps) => {
  const served = new ServedVersionStore(db);
  const locks = new RolloutLockStore(db);
  const quotas = new GpuQuotaStore(db);
  return {
    async autoscalerView(k: ServedKey): Promise<AutoscalerView> {
      const now = Date.now();
      const [row, holder, route, load] = await Promise.all([
        served.get<ModelServerSpec>(k),
        locks.holder(db, k.tenantId, k.modelId),
        routing.getRoute(k.tenantId, k.modelId),
        gatewayMetrics.versionLoad(k.tenantId, k.modelId, k.version, now, autoscale.windowMs),
      ]);
      return {
        spec: row ? { ...row.spec, autoscaled: row.autoscaling !== null } : null,
        autoscaling: row?.autoscaling ?? null,
        cold: row?.cold ?? false,
        rolloutHolder: holder ?? null,
        routed: route?.stable === k.version || route?.canary === k.version,
        load,
        syncMs: autoscale.syncMs,
        now,
      };
    },

    /** What the rollout applied, for the version's replica owner; references only, as in the rollout's input. */
    async recordServedVersion(spec: ModelServerSpec, autoscaling: AutoscalingSpec | null): Promise<void> {
      await served.record({ ...spec, spec, autoscaling });
    },

    async setServingCold(k: ServedKey, cold: boolean): Promise<void> {
      await served.setCold(k, cold);
    },

    /**
     * Claims `replicas` × `gpusPerReplica` of the tenant's GPU quota for the version (resizing its serving claim),
     * or the most replicas that fit; answers the replicas granted. 0 GPUs per replica always fits.
     */
    async claimReplicaGpus(
      k: ServedKey & { cluster: string },
      replicas: number,
      gpusPerReplica: number,
      floor: number,
    ): Promise<{ granted: number; message: string | null }> {
      if (gpusPerReplica === 0) return { granted: replicas, message: null };
      const key = servingClaimKey(k);
      for (let n = replicas; n > floor; n--) {
        const claim = await quotas.claimServing(key, k.tenantId, n * gpusPerReplica);
        if (claim.granted)
          return {
            granted: n,
            message: n < replicas ? `GPU quota: ${replicas} replicas need ${replicas * gpusPerReplica} GPU` : null,
          };
      }
      const quota = await quotas.quotaOf(k.tenantId);
      return {
        granted: floor,
        message: `GPU quota (${quota} GPU) has no room for more than ${floor} replica(s) of ${gpusPerReplica} GPU`,
      };
    },
  };
};

export type AutoscalingActivities = ReturnType<typeof createAutoscalingActivities>;
