import {
  condition,
  continueAsNew,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  sleep,
  workflowInfo,
} from '@temporalio/workflow';
import type { AutoscalingActivities } from '../activities/autoscaling';
import type { KubernetesActivities } from '../activities/kubernetes';
import type { RolloutActivities } from '../activities/rollout';
import {
  AUTOSCALER_LOG_SIZE,
  autoscalerStatusQuery,
  autoscalerWakeSignal,
  type AutoscaleDecision,
  type AutoscalerInput,
  type AutoscalerStatus,
} from '../contracts/autoscaling';
import { ClusterFailures } from '../contracts/cluster';
import { hpaPass } from './support/hpa';
import { messageOf } from './support/failures';

const acts = proxyActivities<AutoscalingActivities & KubernetesActivities & RolloutActivities>({
  startToCloseTimeout: '1 minute',
  retry: { initialInterval: '1 second', maximumInterval: '15 seconds', maximumAttempts: 10 },
});
/** How long a version started from nothing may take to become ready before the pass gives up (the next one retries). */
const START_TIMEOUT_MS = 15 * 60_000;
const starting = proxyActivities<KubernetesActivities>({
  startToCloseTimeout: `${START_TIMEOUT_MS / 1000 + 60}s`,
  heartbeatTimeout: '20 seconds',
  retry: {
    initialInterval: '1 second',
    maximumAttempts: 3,
    nonRetryableErrorTypes: [ClusterFailures.readinessTimeout],
  },
});
const HISTORY_LIMIT = 4_000;

/**
 * The owner of one served version's replicas (autoscaler/<tenant>/<model>/<version>). Each pass (every
 * LLMHUB_AUTOSCALE_SYNC_MS, or at once when a gateway wakes it) reads the version's load from every gateway replica's
 * metrics and decides as the Kubernetes HPA does: desired = ceil(load / target per replica), kept within 10 %
 * tolerance, a scale-down only to the highest recommendation of the stabilisation window (scaleDownDelay), a
 * scale-up bounded per pass and by the tenant's GPU quota, and 0 after scaleToZeroAfter without traffic. It yields to
 * a running rollout of the model, and ends when the version is no longer routed. Without autoscaling settings it only
 * brings a version with nothing running back to one replica, then ends. Every pass is in the decision log (status query).
 */
export async function autoscaleVersion(input: AutoscalerInput): Promise<AutoscalerStatus> {
  const { tenantId, modelId, version } = input;
  const key = { tenantId, modelId, version };
  const status: AutoscalerStatus = {
    phase: 'running',
    tenantId,
    modelId,
    version,
    replicas: 0,
    settings: null,
    decisions: input.carried?.decisions ?? [],
  };
  let recommendations = input.carried?.recommendations ?? [];
  let woken = false;
  setHandler(autoscalerStatusQuery, () => status);
  setHandler(autoscalerWakeSignal, () => {
    woken = true;
  });
  let lastTrafficAt = Date.now();

  const record = (d: Omit<AutoscaleDecision, 'at'>) => {
    status.decisions.push({ at: Date.now(), ...d });
    status.decisions.splice(0, Math.max(0, status.decisions.length - AUTOSCALER_LOG_SIZE));
    status.replicas = d.applied;
    setCurrentDetails(
      `**${modelId}@${version}: ${d.applied} replica(s)** (${status.phase})\n\n` +
        `Last decision: ${d.reason}, ${d.current} → ${d.applied}` +
        `${d.metric === null ? '' : `, load ${d.metric.toFixed(2)} per replica`}. ${d.message}`,
    );
  };

  for (;;) {
    if (!woken && (workflowInfo().continueAsNewSuggested || workflowInfo().historyLength > HISTORY_LIMIT))
      await continueAsNew<typeof autoscaleVersion>({
        ...key,
        carried: { decisions: status.decisions, recommendations },
      });
    const view = await acts.autoscalerView(key);
    status.settings = view.autoscaling;
    const spec = view.spec;
    if (spec === null || (!view.routed && view.rolloutHolder === null)) {
      status.phase = 'stopped';
      record({
        measuredAt: view.now,
        metric: null,
        current: status.replicas,
        desired: status.replicas,
        applied: status.replicas,
        reason: 'stopped',
        message: spec === null ? 'no rollout recorded how to serve this version' : 'the version is no longer routed',
      });
      return status;
    }
    if (view.rolloutHolder !== null) {
      // The rollout owns the model's replicas until it ends: no write here, so the two never fight.
      status.phase = 'yielding';
      record({
        measuredAt: view.now,
        metric: null,
        current: status.replicas,
        desired: status.replicas,
        applied: status.replicas,
        reason: 'yielded_to_rollout',
        message: `rollout '${view.rolloutHolder}' runs on ${modelId}; replicas are left to it until it ends`,
      });
      // A wake-up waits for the rollout's end too (and is served then): replicas are the rollout's meanwhile.
      await sleep(view.syncMs);
      continue;
    }
    status.phase = 'running';
    const ref = await acts.servedRefOf(spec.cluster, tenantId, modelId, version);
    const { desired: current, ready } = await acts.servedReplicas(ref);
    const wake = woken;
    woken = false;
    if (view.load.lastRequestAt !== null) lastTrafficAt = Math.max(lastTrafficAt, view.load.lastRequestAt);
    if (wake) lastTrafficAt = Math.max(lastTrafficAt, view.now);

    const s = view.autoscaling;
    let metric: number | null = null;
    let desired = 1;
    let next = 1;
    let reason: AutoscaleDecision['reason'] = 'steady';
    let message = '';
    if (s !== null) {
      const pass = hpaPass({
        settings: s,
        current,
        load: view.load,
        now: view.now,
        idleMs: view.now - lastTrafficAt,
        wake,
        recommendations,
      });
      ({ metric, desired, next, recommendations, message } = pass);
    }
    if (next > current) {
      const claim = await acts.claimReplicaGpus({ ...key, cluster: spec.cluster }, next, spec.resources.gpu, current);
      if (claim.granted < next) {
        reason = 'quota_capped';
        message = claim.message ?? message;
        next = claim.granted;
      }
    }
    if (reason !== 'quota_capped')
      reason =
        next > current
          ? current === 0
            ? s === null
              ? 'restore'
              : 'wake'
            : 'scale_up'
          : next < current
            ? next === 0
              ? 'scale_to_zero'
              : 'scale_down'
            : 'steady';

    let applied = current;
    try {
      if (next === 0 && current > 0) {
        // Gateways hold the version's requests from here on, instead of sending them to a server going away.
        await acts.setServingCold(key, true);
        await acts.setServedReplicas(spec, 0);
        await acts.releaseServingGpus({ ...key, cluster: spec.cluster });
        applied = 0;
      } else if (next > 0 && (current === 0 || ((wake || view.cold) && ready === 0))) {
        applied = next;
        const started = await acts.setServedReplicas(spec, next);
        await starting.waitModelVersionReady(started, START_TIMEOUT_MS);
        await acts.setVersionEndpoint(key, started.endpoint);
        await acts.setServingCold(key, false);
      } else if (next !== current) {
        await acts.setServedReplicas(spec, next);
        if (next < current) await acts.claimReplicaGpus({ ...key, cluster: spec.cluster }, next, spec.resources.gpu, 0);
        applied = next;
      } else if (wake || view.cold) {
        // Running already (the requests came while it was starting, or a gateway lost its connection): release them.
        await acts.setServingCold(key, false);
      }
    } catch (err) {
      message = `${message ? `${message}; ` : ''}failed: ${messageOf(err)}`;
    }
    record({ measuredAt: view.now, metric, current, desired, applied, reason, message });

    if (s === null && applied > 0) {
      // A version without autoscaling needs an owner only while nothing of it runs.
      status.phase = 'stopped';
      return status;
    }
    await condition(() => woken, view.syncMs);
  }
}
