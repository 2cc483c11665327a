import { ApplicationFailure } from '@temporalio/common';
import { type AnalysisMeasurement, type AnalysisSpec, RolloutFailures } from '../../contracts/rollout';
import type { Pool } from 'pg';
import type { GatewayMetricsStore } from '../../common/store/gateway-metrics';
import type { RegistryStore } from '../../common/store/registry';
import { GpuQuotaStore, servingClaimKey } from '../../common/store/gpu-quota';
import { LineageStore } from '../../common/store/lineage';
import { providerTarget, ProviderStore } from '../../common/store/providers';
import { RolloutLockStore } from '../../common/store/rollouts';
import type { RouteSpec, RoutingStore } from '../../common/store/routing';
import type { AlertSink, RolloutAlert } from './alerts';
import { rolloutAnalysesTotal } from './metrics';

export interface RolloutActivityDeps {
  db: Pool;
  registry: RegistryStore;
  routing: RoutingStore;
  gatewayMetrics: GatewayMetricsStore;
  alerts: AlertSink;
}

export interface VersionRef {
  tenantId: string;
  modelId: string;
  version: string;
}

/** A version served on a cluster: what a serving GPU claim is held for. */
export interface ServedVersion extends VersionRef {
  cluster: string;
}

/** Every serving Deployment runs one replica when applied; the old stable is scaled to 0 (and its claim released). */
const SERVING_REPLICAS = 1;

export interface AnalysisWindow extends VersionRef {
  stepIndex: number;
  sinceMs: number;
}

type VersionStats = Awaited<ReturnType<GatewayMetricsStore['versionStats']>>;

function judge(w: AnalysisWindow, spec: AnalysisSpec, s: VersionStats, finishedAt: number): AnalysisMeasurement {
  const base = {
    stepIndex: w.stepIndex,
    version: w.version,
    startedAt: w.sinceMs,
    finishedAt,
    requests: s.requests,
    errors: s.errors,
    successRate: s.successRate,
    p95LatencyMs: s.p95LatencyMs,
  };
  if (s.requests < spec.minRequests)
    return {
      ...base,
      phase: 'Inconclusive',
      message: `${s.requests} requests, fewer than the ${spec.minRequests} needed`,
    };
  const problems = [
    ...(s.successRate < spec.minSuccessRate
      ? [`success rate ${s.successRate.toFixed(3)} < ${spec.minSuccessRate}`]
      : []),
    ...(s.p95LatencyMs !== null && s.p95LatencyMs > spec.maxP95LatencyMs
      ? [`p95 ${Math.round(s.p95LatencyMs)} ms > ${spec.maxP95LatencyMs} ms`]
      : []),
  ];
  return problems.length
    ? { ...base, phase: 'Failed', message: problems.join('; ') }
    : { ...base, phase: 'Successful', message: `success rate ${s.successRate.toFixed(3)} over ${s.requests} requests` };
}

export const createRolloutActivities = ({ db, registry, routing, gatewayMetrics, alerts }: RolloutActivityDeps) => {
  const locks = new RolloutLockStore(db);
  const lineage = new LineageStore(db);
  const quotas = new GpuQuotaStore(db);
  const providers = new ProviderStore(db);
  return {
    /**
     * Claims the version's GPUs (replicas × GPUs per replica) from the tenant's one GPU quota, which fine-tunes and
     * GPU conversions share; past the quota the deploy is refused (non-retryable, saying what holds the quota), before
     * anything is applied. Queueing a deploy would leave its canary waiting while traffic steps are due.
     */
    async claimServingGpus(v: ServedVersion, gpusPerReplica: number): Promise<void> {
      const gpus = SERVING_REPLICAS * gpusPerReplica;
      const claim = await quotas.claimServing(servingClaimKey(v), v.tenantId, gpus);
      if (claim.granted) return;
      const { held, quota } = claim;
      const free = Math.max(0, quota - held.serving - held.fineTunes - held.conversions);
      throw ApplicationFailure.nonRetryable(
        `GPU quota exceeded: ${v.modelId}@${v.version} needs ${gpus} GPU (${SERVING_REPLICAS} replica × ${gpusPerReplica}); ` +
          `the tenant's quota is ${quota} GPU, ${free} free (serving holds ${held.serving}, fine-tunes ${held.fineTunes}, conversions ${held.conversions})`,
        RolloutFailures.gpuQuotaExceeded,
      );
    },

    /** Idempotent: after the version's Deployment is deleted (rollback) or scaled to 0 (replaced by a promotion). */
    async releaseServingGpus(v: ServedVersion): Promise<void> {
      await quotas.releaseServing(servingClaimKey(v));
    },

    /**
     * Checks the version can be rolled out and answers the current stable version (null: first deployment of the
     * model). The stable version itself is refused, unless the rollout re-applies it (`reapplyStable`: a stable
     * version with nothing running is served again).
     */
    async resolveRollout(
      v: VersionRef,
      opts: { reapplyStable?: boolean } = {},
    ): Promise<{ artifactUri: string; stable: string | null }> {
      const found = await registry.getVersion(v.tenantId, v.modelId, v.version);
      if (!found || found.state !== 'ready') {
        throw ApplicationFailure.nonRetryable(
          `${v.modelId}@${v.version} is ${found ? `in state '${found.state}'` : 'not registered'}; only a ready version rolls out`,
          RolloutFailures.versionNotReady,
        );
      }
      const route = await routing.getRoute(v.tenantId, v.modelId);
      if (route?.stable === v.version && !opts.reapplyStable)
        throw ApplicationFailure.nonRetryable(
          `${v.modelId}@${v.version} is already the stable version`,
          RolloutFailures.alreadyStable,
        );
      return { artifactUri: found.artifactUri, stable: route?.stable ?? null };
    },

    /**
     * Checks a provider canary can start (the provider maps the model, which has a stable to compare it with) and
     * answers the stable as routes and metrics name it: the provider route's (`provider:<ref>`), else the deployed one.
     */
    async resolveProviderCanary(v: VersionRef, provider: string): Promise<{ stable: string }> {
      const found = await providers.resolve(v.tenantId, provider);
      if (!found?.models[v.modelId])
        throw ApplicationFailure.nonRetryable(
          `provider '${provider}' ${found ? `maps no model '${v.modelId}'` : 'is not registered'}`,
          RolloutFailures.versionNotReady,
        );
      const route = await providers.getRoute(v.tenantId, v.modelId);
      if (route?.stable === provider)
        throw ApplicationFailure.nonRetryable(
          `provider '${provider}' is already the stable`,
          RolloutFailures.alreadyStable,
        );
      const stable = route?.stable
        ? providerTarget(route.stable)
        : (await routing.getRoute(v.tenantId, v.modelId))?.stable;
      if (!stable)
        throw ApplicationFailure.nonRetryable(
          `model '${v.modelId}' has no stable to canary against`,
          RolloutFailures.versionNotReady,
        );
      return { stable };
    },

    /** A provider canary's weight (0 with no canary: rolled back) on the model's provider route. */
    async setProviderCanary(tenantId: string, modelId: string, canary: string | null, weight: number): Promise<void> {
      await providers.setCanary(tenantId, modelId, canary, weight);
    },

    async promoteProviderCanary(tenantId: string, modelId: string, provider: string): Promise<void> {
      await providers.promoteCanary(tenantId, modelId, provider);
    },

    async setVersionEndpoint(v: VersionRef, endpoint: string | null): Promise<void> {
      await routing.setVersionEndpoint(v.tenantId, v.modelId, v.version, endpoint);
    },

    async setRoute(tenantId: string, modelId: string, route: RouteSpec): Promise<void> {
      await routing.setRoute(tenantId, modelId, route);
    },

    /** One chat completion straight to the version's server, before it gets any user traffic. */
    async probeEndpoint(endpoint: string, modelId: string): Promise<{ latencyMs: number }> {
      const started = Date.now();
      const res = await fetch(`${endpoint}/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          model: modelId,
          messages: [{ role: 'user', content: 'llmhub rollout probe' }],
          max_tokens: 8,
        }),
        signal: AbortSignal.timeout(30_000),
      });
      const body = (await res.json().catch(() => undefined)) as { choices?: unknown[] } | undefined;
      if (!res.ok || !Array.isArray(body?.choices) || body.choices.length === 0) {
        throw ApplicationFailure.retryable(
          `probe of ${endpoint} answered ${res.status} without choices`,
          RolloutFailures.probeFailed,
        );
      }
      return { latencyMs: Date.now() - started };
    },

    /** One measurement of the canary's gateway metrics since `sinceMs` against the spec's thresholds. */
    async analyseCanary(w: AnalysisWindow, spec: AnalysisSpec): Promise<AnalysisMeasurement> {
      const finishedAt = Date.now();
      const stats = await gatewayMetrics.versionStats(w.tenantId, w.modelId, w.version, w.sinceMs);
      const m = judge(w, spec, stats, finishedAt);
      rolloutAnalysesTotal.inc({ phase: m.phase });
      return m;
    },

    async markVersionRolledBack(v: VersionRef, reason: string): Promise<void> {
      await registry.markVersionFailed(v.tenantId, v.modelId, v.version, `rolled back: ${reason}`);
    },

    async emitRolloutAlert(alert: RolloutAlert): Promise<void> {
      await alerts.emit(alert);
    },

    async releaseRolloutLock(tenantId: string, modelId: string, workflowId: string): Promise<void> {
      await locks.release(db, tenantId, modelId, workflowId);
    },

    /** The lock POST /v1/deploy takes before its start, for a rollout a pipeline starts once its version exists. */
    async acquireRolloutLock(l: {
      tenantId: string;
      modelId: string;
      deploymentId: string;
      workflowId: string;
    }): Promise<void> {
      const { heldBy } = await locks.acquire(db, l);
      if (heldBy)
        throw ApplicationFailure.nonRetryable(
          `model '${l.modelId}' has a rollout in progress: '${heldBy}'`,
          RolloutFailures.rolloutInProgress,
        );
    },

    /** The promoted version's lineage: which rollout made it the stable one, where. */
    async recordRolloutLineage(
      v: VersionRef,
      workflowId: string,
      details: { deploymentId: string; cluster: string; endpoint: string | null; previousStable: string | null },
    ): Promise<void> {
      await lineage.record({ ...v, kind: 'rollout', parent: null, workflowId, details });
    },
  };
};

export type RolloutActivities = ReturnType<typeof createRolloutActivities>;
