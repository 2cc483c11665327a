import {
  ApplicationFailure,
  CancellationScope,
  condition,
  isCancellation,
  ParentClosePolicy,
  patched,
  proxyActivities,
  setHandler,
  startChild,
  workflowInfo,
} from '@temporalio/workflow';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import type { AutoscalingActivities } from '../activities/autoscaling';
import { autoscalerWorkflowId } from '../contracts/autoscaling';
import { ModelIdKey, TenantIdKey } from '../contracts/search-attributes';
import { autoscaleVersion } from './autoscaler';
import { messageOf, rootCause } from './support/failures';
import { checkSteeringCaller, rejected } from './support/approvals';
import { trackStatus } from './support/status';
import { durationMs } from './support/duration';
import type { KubernetesActivities, ServedRef } from '../activities/kubernetes';
import type { RolloutActivities } from '../activities/rollout';
import type { RolloutAlert } from '../activities/rollout/alerts';
import type { SteeringRequest } from '../contracts/approvals';
import { ClusterFailures } from '../contracts/cluster';
import {
  RolloutFailures,
  rolloutContract,
  rolloutSteering,
  TERMINAL_ROLLOUT_PHASES,
  type AnalysisSpec,
  type RolloutInput,
  type RolloutStatus,
} from '../contracts/rollout';

/** Serving claims its GPUs from the tenant's quota before it applies anything, and releases them with the Deployment. */
const SERVING_GPU_PATCH = 'rollout-serving-gpu-quota';
/** Deploying the stable version again re-applies it (it may have nothing running) instead of refusing. */
const REAPPLY_STABLE_PATCH = 'rollout-reapply-stable';
/** The rollout records what it applied for the version's replica owner, and starts its autoscaler at promotion. */
const AUTOSCALING_PATCH = 'rollout-autoscaling';
const NON_RETRYABLE = [
  RolloutFailures.versionNotReady,
  RolloutFailures.alreadyStable,
  ClusterFailures.readinessTimeout,
  ClusterFailures.invalidManifest,
  ClusterFailures.unknownCluster,
  ClusterFailures.noEndpoint,
];
const steps = proxyActivities<RolloutActivities & KubernetesActivities & AutoscalingActivities>({
  startToCloseTimeout: '1 minute',
  retry: {
    initialInterval: '1 second',
    maximumInterval: '15 seconds',
    maximumAttempts: 10,
    nonRetryableErrorTypes: NON_RETRYABLE,
  },
});
const probe = proxyActivities<RolloutActivities>({
  startToCloseTimeout: '45 seconds',
  retry: { initialInterval: '2 seconds', maximumAttempts: 3, nonRetryableErrorTypes: NON_RETRYABLE },
});
/**
 * Steps that must end done whatever happened before them (promotion, rollback, lock release): no attempt limit.
 * Every one of them is idempotent.
 */
const mustFinish = proxyActivities<RolloutActivities & KubernetesActivities>({
  startToCloseTimeout: '1 minute',
  retry: { initialInterval: '1 second', maximumInterval: '30 seconds' },
});

function reasonOf(err: unknown): { message: string; kind: RolloutAlert['reason'] } {
  const cause = rootCause(err);
  const type = cause instanceof ApplicationFailure ? cause.type : undefined;
  const message = messageOf(err);
  if (type === ClusterFailures.readinessTimeout) return { message, kind: 'readiness_timeout' };
  if (type === RolloutFailures.probeFailed) return { message, kind: 'probe_failed' };
  return { message, kind: 'error' };
}

/**
 * Canary rollout of one model version: validate → apply Deployment + Service → wait ready → probe → canary steps
 * (weights in the gateway's routing, pauses, analyses of the canary's gateway metrics) → promote; or, on a failed
 * analysis, readiness timeout, probe failure, error or abort, roll back: stable 100 % first, then the canary removed,
 * the version marked failed and an alert sent. The model's rollout lock is released whatever the outcome.
 */
export async function rolloutModel(input: RolloutInput): Promise<RolloutStatus> {
  const { tenantId, modelId, version, strategy } = input;
  // Only provider canaries' inputs name a provider, so recorded histories take none of its branches below.
  const provider = input.provider;
  const wfId = workflowInfo().workflowId;
  const status: RolloutStatus = {
    phase: 'validating',
    deploymentId: input.deploymentId,
    modelId,
    version,
    specHash: input.specHash,
    currentStepIndex: 0,
    stepCount: strategy.steps.length,
    weights: { stable: null, canary: null, canaryWeight: 0 },
    pauseReason: null,
    approvals: [],
    analyses: [],
    startedAt: Date.now(),
    endpoint: null,
    failureReason: null,
    rollbackStartedAt: null,
    finishedAt: null,
  };
  const enter = trackStatus(rolloutContract.statusQuery, status, 'phase');
  let requested: SteeringAction | undefined;
  const main = new CancellationScope();
  acceptSteering(
    status,
    tenantId,
    () => requested,
    (r) => {
      requested = r;
      // An abort interrupts whatever the rollout waits on (an activity, a pause); the rollback runs outside this scope.
      if (r.action === 'abort') main.cancel();
    },
  );

  const ref = { tenantId, modelId, version };
  const served = { ...ref, cluster: input.cluster };
  /** Ends a rollout that deployed nothing: the version stays as it was, so it can be rolled out again. */
  const refuse = async (err: unknown): Promise<never> => {
    status.failureReason = reasonOf(err).message;
    await CancellationScope.nonCancellable(() => mustFinish.releaseRolloutLock(tenantId, modelId, wfId));
    status.finishedAt = Date.now();
    enter('rolled_back');
    throw ApplicationFailure.nonRetryable(
      `rollout of ${modelId}@${version} refused: ${status.failureReason}`,
      RolloutFailures.refused,
    );
  };
  let resolved: { artifactUri: string; stable: string | null };
  try {
    resolved = provider
      ? { artifactUri: '', ...(await steps.resolveProviderCanary(ref, provider)) }
      : await (patched(REAPPLY_STABLE_PATCH)
          ? steps.resolveRollout(ref, { reapplyStable: true })
          : steps.resolveRollout(ref));
  } catch (err) {
    return refuse(err);
  }
  /** The stable version deployed again: applied, waited for and probed, with no canary steps and nothing scaled down. */
  const reapplying = resolved.stable === version;
  // Histories recorded before serving claimed its GPUs from the tenant's quota have none of the claims and releases.
  const claimsGpus = !provider && patched(SERVING_GPU_PATCH);
  // A re-applied stable version holds its claim already (an autoscaled one for all its replicas).
  if (claimsGpus && !reapplying) {
    try {
      await steps.claimServingGpus(served, input.resources.gpu);
    } catch (err) {
      return refuse(err);
    }
  }
  const { artifactUri, stable } = resolved;
  status.weights.stable = stable;
  let canary: ServedRef | undefined;

  /** Waits while paused (by a step, an operator, inconclusive analyses or an approval gate); true when a promote/abort request cut it short. */
  const holdWhilePaused = async (): Promise<boolean> => {
    if (status.pauseReason === null) return false;
    // A gate shows in the Phase search attribute, so approvers can list what waits for them.
    enter(status.pauseReason === 'approval' ? 'awaiting_approval' : 'paused');
    await condition(() => status.pauseReason === null || requested !== undefined);
    enter('progressing');
    return requested !== undefined;
  };
  const setCanaryWeight = async (weight: number) => {
    if (provider) await steps.setProviderCanary(tenantId, modelId, provider, weight);
    else await steps.setRoute(tenantId, modelId, { stable: stable!, canary: version, canaryWeight: weight });
    status.weights = { stable, canary: version, canaryWeight: weight };
  };
  const analyse = async (
    spec: AnalysisSpec,
    stepIndex: number,
    windowStart: number,
  ): Promise<'passed' | 'failed' | 'interrupted'> => {
    let failed = 0;
    let inconclusive = 0;
    let since = windowStart;
    for (;;) {
      const m = await steps.analyseCanary({ ...ref, stepIndex, sinceMs: since }, spec);
      status.analyses.push(m);
      if (m.phase === 'Successful') return 'passed';
      if (m.phase === 'Failed') {
        inconclusive = 0;
        since = m.finishedAt;
        if (++failed >= spec.failureLimit) return 'failed';
      } else if (++inconclusive >= spec.inconclusiveLimit) {
        // Argo's answer to too little evidence: stop and let a person decide. An Inconclusive window keeps growing.
        inconclusive = 0;
        status.pauseReason = 'inconclusive';
        if (await holdWhilePaused()) return 'interrupted';
      }
      if (await condition(() => requested !== undefined, spec.interval)) return 'interrupted';
    }
  };

  /** Deploys the version and probes it; false when no canary steps follow (a first deployment, a re-applied stable). */
  const deploy = async (): Promise<boolean> => {
    enter('deploying');
    const spec = {
      cluster: input.cluster,
      tenantId,
      modelId,
      version,
      workflowId: wfId,
      artifactUri,
      resources: input.resources,
      env: input.env,
      podAnnotations: strategy.canaryMetadata.annotations,
      podLabels: strategy.canaryMetadata.labels,
      // Only inputs with autoscaling carry the flag, so the applied objects of recorded histories are unchanged.
      ...(input.autoscaling ? { autoscaled: true } : {}),
    };
    const applied = await steps.applyModelVersion(spec);
    if (patched(AUTOSCALING_PATCH)) await steps.recordServedVersion(spec, input.autoscaling ?? null);
    canary = { cluster: applied.cluster, namespace: applied.namespace, name: applied.name };
    status.endpoint = applied.endpoint;
    enter('waiting_ready');
    await proxyActivities<KubernetesActivities>({
      startToCloseTimeout: `${Math.ceil(durationMs(strategy.readinessTimeout) / 1000) + 60}s`,
      heartbeatTimeout: '20 seconds',
      retry: {
        initialInterval: '1 second',
        maximumInterval: '10 seconds',
        maximumAttempts: 5,
        nonRetryableErrorTypes: NON_RETRYABLE,
      },
    }).waitModelVersionReady(canary, durationMs(strategy.readinessTimeout));
    enter('probing');
    await probe.probeEndpoint(applied.endpoint, modelId);
    await steps.setVersionEndpoint(ref, applied.endpoint);
    return stable !== null && !reapplying;
  };

  /** The steps up to promotion; throws to roll back. Returns once the canary is the new stable. */
  const progress = async () => {
    // A provider canary has nothing to deploy: the provider serves already, and its weight starts at the first step.
    if (!provider && !(await deploy())) return;
    enter('progressing');
    let windowStart = Date.now();
    for (let i = 0; i < strategy.steps.length; i++) {
      status.currentStepIndex = i;
      if (await holdWhilePaused()) break;
      const step = strategy.steps[i]!;
      if ('setWeight' in step) {
        await setCanaryWeight(step.setWeight);
        windowStart = Date.now();
      } else if ('pause' in step) {
        if (step.pause.duration === undefined) {
          status.pauseReason = 'step';
          if (await holdWhilePaused()) break;
        } else if (await condition(() => requested !== undefined, step.pause.duration)) break;
      } else if ('approval' in step) {
        // Only inputs with an approval step reach this branch, so recorded histories replay without a patch.
        status.pauseReason = 'approval';
        if (await holdWhilePaused()) break;
      } else {
        const outcome = await analyse(strategy.analysis, i, windowStart);
        if (outcome === 'interrupted') break;
        if (outcome === 'failed') {
          const last = status.analyses[status.analyses.length - 1]!;
          throw ApplicationFailure.nonRetryable(
            `analysis failed ${strategy.analysis.failureLimit} times in a row at step ${i}: ${last.message}`,
            RolloutFailures.analysisFailed,
          );
        }
        windowStart = Date.now();
      }
    }
    status.currentStepIndex = strategy.steps.length;
  };

  try {
    await main.run(progress);
    if (requested?.action === 'abort') throw new Error('aborted');
  } catch (err) {
    const aborted = requested?.action === 'abort';
    const why = aborted
      ? {
          message: `aborted by ${requested!.by}${requested!.reason ? `: ${requested!.reason}` : ''}`,
          kind: 'aborted' as const,
        }
      : isCancellation(err)
        ? { message: 'the rollout workflow was cancelled', kind: 'aborted' as const }
        : err instanceof ApplicationFailure && err.type === RolloutFailures.analysisFailed
          ? { message: err.message, kind: 'analysis_failed' as const }
          : reasonOf(err);
    await CancellationScope.nonCancellable(() => rollback(why));
    throw ApplicationFailure.nonRetryable(
      `rollout of ${modelId}@${version} rolled back: ${why.message}`,
      RolloutFailures.rolledBack,
      status,
    );
  }

  enter('promoting');
  await CancellationScope.nonCancellable(async () => {
    if (provider) await mustFinish.promoteProviderCanary(tenantId, modelId, provider);
    else await mustFinish.setRoute(tenantId, modelId, { stable: version, canary: null });
    status.weights = { stable: version, canary: null, canaryWeight: 0 };
    if (stable !== null && !reapplying && !provider) {
      await mustFinish.scaleModelVersion(await mustFinish.servedRefOf(input.cluster, tenantId, modelId, stable), 0);
      if (claimsGpus) await mustFinish.releaseServingGpus({ ...served, version: stable });
    }
    // Histories recorded before rollouts wrote lineage have no such activity at this point.
    if (!provider && patched('rollout-lineage')) {
      await mustFinish.recordRolloutLineage(ref, wfId, {
        deploymentId: input.deploymentId,
        cluster: input.cluster,
        endpoint: status.endpoint,
        previousStable: stable,
      });
    }
    if (input.autoscaling && patched(AUTOSCALING_PATCH)) await startAutoscaler();
    await mustFinish.releaseRolloutLock(tenantId, modelId, wfId);
  });
  status.finishedAt = Date.now();
  enter('promoted');
  return status;

  /** The version's autoscaler outlives this run; one already running (a re-applied version) reads the new settings. */
  async function startAutoscaler(): Promise<void> {
    try {
      await startChild(autoscaleVersion, {
        workflowId: autoscalerWorkflowId(tenantId, modelId, version),
        args: [ref],
        parentClosePolicy: ParentClosePolicy.ABANDON,
        typedSearchAttributes: [
          { key: TenantIdKey, value: tenantId },
          { key: ModelIdKey, value: modelId },
        ],
        staticSummary: `Autoscale ${modelId}@${version}`,
      });
    } catch (err) {
      if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
    }
  }

  async function rollback(why: { message: string; kind: RolloutAlert['reason'] }): Promise<void> {
    status.failureReason = why.message;
    status.rollbackStartedAt = Date.now();
    enter('rolling_back');
    // Traffic first: from here on no user request reaches the canary, whatever the cleanup below takes.
    if (provider) await mustFinish.setProviderCanary(tenantId, modelId, null, 0);
    else if (stable !== null) await mustFinish.setRoute(tenantId, modelId, { stable, canary: null });
    if (stable !== null) status.weights = { stable, canary: null, canaryWeight: 0 };
    // A re-applied stable version keeps serving what it can: it is not removed or marked failed; a provider has
    // nothing deployed to remove.
    if (!reapplying && !provider) {
      await mustFinish.deleteModelVersion(
        canary ?? (await mustFinish.servedRefOf(input.cluster, tenantId, modelId, version)),
      );
      if (claimsGpus) await mustFinish.releaseServingGpus(served);
      await mustFinish.setVersionEndpoint(ref, null);
      await mustFinish.markVersionRolledBack(ref, why.message);
    }
    await mustFinish.emitRolloutAlert({
      tenantId,
      modelId,
      version,
      workflowId: wfId,
      reason: why.kind,
      message: why.message,
    });
    await mustFinish.releaseRolloutLock(tenantId, modelId, wfId);
    status.finishedAt = Date.now();
    enter('rolled_back');
  }
}

type SteeringAction = { action: 'promote' | 'abort'; by: string; reason?: string };

/**
 * The steering Updates (pause, resume, approve, promote now, abort). Validators refuse before anything reaches history:
 * a caller of another tenant, a rollout that is ending, an action that does not fit the phase. Promote and abort are
 * handed to the runbook through `request`; pause, resume and approve only move `pauseReason`, which the runbook waits on.
 */
function acceptSteering(
  status: RolloutStatus,
  tenantId: string,
  requested: () => SteeringAction | undefined,
  request: (r: SteeringAction) => void,
): void {
  const ending = () =>
    TERMINAL_ROLLOUT_PHASES.includes(status.phase) ||
    status.phase === 'rolling_back' ||
    status.phase === 'promoting' ||
    requested() !== undefined;
  const validateCaller = (r: SteeringRequest) => {
    // Validators do not run on replay, so histories recorded before tenantId was sent still replay.
    checkSteeringCaller(r, tenantId, 'deployment');
    const pending = requested();
    if (ending()) rejected(`the rollout is ${pending ? `being ${pending.action}d` : status.phase}`);
  };
  const { pause, resume, approve, promote, abort } = rolloutSteering;
  setHandler(
    pause.update,
    () => {
      status.pauseReason = 'operator';
      return status;
    },
    {
      validator: (r) => {
        validateCaller(r);
        if (status.pauseReason !== null) rejected('the rollout is already paused');
      },
    },
  );
  setHandler(
    resume.update,
    () => {
      status.pauseReason = null;
      return status;
    },
    {
      validator: (r) => {
        validateCaller(r);
        if (status.pauseReason === null) rejected('the rollout is not paused');
        if (status.pauseReason === 'approval') rejected('the rollout waits for an approver (approve)');
      },
    },
  );
  setHandler(
    approve.update,
    (r) => {
      status.approvals.push({ stepIndex: status.currentStepIndex, by: r.by, reason: r.reason ?? null, at: Date.now() });
      status.pauseReason = null;
      return status;
    },
    {
      validator: (r) => {
        validateCaller(r);
        if (status.pauseReason !== 'approval')
          rejected(`only a rollout at an approval gate can be approved; the rollout is ${status.phase}`);
      },
    },
  );
  setHandler(
    promote.update,
    (r) => {
      request({ action: 'promote', by: r.by, reason: r.reason });
      return status;
    },
    {
      validator: (r) => {
        validateCaller(r);
        if (status.phase !== 'progressing' && status.phase !== 'paused')
          rejected(`only a canary taking traffic can be promoted; the rollout is ${status.phase}`);
      },
    },
  );
  setHandler(
    abort.update,
    (r) => {
      request({ action: 'abort', by: r.by, reason: r.reason });
      return status;
    },
    { validator: validateCaller },
  );
}
