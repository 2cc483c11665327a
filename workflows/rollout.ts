import {
  ApplicationFailure,
  CancellationScope,
  condition,
  defineQuery,
  defineUpdate,
  isCancellation,
  patched,
  proxyActivities,
  setHandler,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import { messageOf, rootCause } from './failures';
import type { KubernetesActivities, ServedRef } from '../activities/kubernetes';
import type { RolloutActivities } from '../activities/rollout';
import type { RolloutAlert } from '../activities/rollout/alerts';
import type { AnalysisSpec, RolloutInput, RolloutPhase, RolloutStatus } from '../common/rollout';
import { TERMINAL_PHASES } from '../common/rollout';
import { PhaseKey } from '../common/search-attributes';

export interface SteeringRequest {
  /** Who asked (the API puts the caller's subject here), for the status and the audit trail. */
  by: string;
  /** The caller's tenant: a run only takes steering from its own tenant, whatever workflow id reached it. */
  tenantId: string;
  reason?: string;
}
export const rolloutStatusQuery = defineQuery<RolloutStatus>('status');
export const pauseUpdate = defineUpdate<RolloutStatus, [SteeringRequest]>('pause');
export const resumeUpdate = defineUpdate<RolloutStatus, [SteeringRequest]>('resume');
export const promoteNowUpdate = defineUpdate<RolloutStatus, [SteeringRequest]>('promoteNow');
export const abortUpdate = defineUpdate<RolloutStatus, [SteeringRequest]>('abort');
export const approveUpdate = defineUpdate<RolloutStatus, [SteeringRequest]>('approve');

const NON_RETRYABLE = ['VersionNotReady', 'AlreadyStable', 'ReadinessTimeout', 'InvalidManifest', 'UnknownCluster', 'NoEndpoint'];
const steps = proxyActivities<RolloutActivities & KubernetesActivities>({
  startToCloseTimeout: '1 minute',
  retry: { initialInterval: '1 second', maximumInterval: '15 seconds', maximumAttempts: 10, nonRetryableErrorTypes: NON_RETRYABLE },
});
const probe = proxyActivities<RolloutActivities>({
  startToCloseTimeout: '45 seconds',
  retry: { initialInterval: '2 seconds', maximumAttempts: 3, nonRetryableErrorTypes: NON_RETRYABLE },
});
/** Rollback and lock release: no attempt limit, they must end done. Every one of them is idempotent. */
const undo = proxyActivities<RolloutActivities & KubernetesActivities>({
  startToCloseTimeout: '1 minute',
  retry: { initialInterval: '1 second', maximumInterval: '30 seconds' },
});

function reasonOf(err: unknown): { message: string; kind: RolloutAlert['reason'] } {
  const cause = rootCause(err);
  const type = cause instanceof ApplicationFailure ? cause.type : undefined;
  const message = messageOf(err);
  if (type === 'ReadinessTimeout') return { message, kind: 'readiness_timeout' };
  if (type === 'ProbeFailed') return { message, kind: 'probe_failed' };
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
  const enter = (phase: RolloutPhase) => {
    status.phase = phase;
    upsertSearchAttributes([{ key: PhaseKey, value: phase }]);
  };
  let requested: { action: 'promote' | 'abort'; by: string; reason?: string } | undefined;
  const main = new CancellationScope();
  const terminal = () => TERMINAL_PHASES.includes(status.phase) || status.phase === 'rolling_back' || status.phase === 'promoting' || requested !== undefined;
  const reject = (why: string): never => {
    throw new Error(why);
  };
  const validateCaller = (r: SteeringRequest) => {
    if (!r || typeof r.by !== 'string' || r.by.length === 0) reject('a steering request names who asks (by)');
    // Validators do not run on replay, so histories recorded before tenantId was sent still replay.
    if (r.tenantId !== tenantId) reject('the deployment belongs to another tenant');
    if (terminal()) reject(`the rollout is ${requested ? `being ${requested.action}d` : status.phase}`);
  };
  setHandler(rolloutStatusQuery, () => status);
  setHandler(
    pauseUpdate,
    () => {
      status.pauseReason = 'operator';
      return status;
    },
    {
      validator: (r) => {
        validateCaller(r);
        if (status.pauseReason !== null) reject('the rollout is already paused');
      },
    },
  );
  setHandler(
    resumeUpdate,
    () => {
      status.pauseReason = null;
      return status;
    },
    {
      validator: (r) => {
        validateCaller(r);
        if (status.pauseReason === null) reject('the rollout is not paused');
        if (status.pauseReason === 'approval') reject('the rollout waits for an approver (approve)');
      },
    },
  );
  setHandler(
    approveUpdate,
    (r) => {
      status.approvals.push({ stepIndex: status.currentStepIndex, by: r.by, reason: r.reason ?? null, at: Date.now() });
      status.pauseReason = null;
      return status;
    },
    {
      validator: (r) => {
        validateCaller(r);
        if (status.pauseReason !== 'approval') reject(`only a rollout at an approval gate can be approved; the rollout is ${status.phase}`);
      },
    },
  );
  setHandler(
    promoteNowUpdate,
    (r) => {
      requested = { action: 'promote', by: r.by, reason: r.reason };
      return status;
    },
    {
      validator: (r) => {
        validateCaller(r);
        if (status.phase !== 'progressing' && status.phase !== 'paused') reject(`only a canary taking traffic can be promoted; the rollout is ${status.phase}`);
      },
    },
  );
  setHandler(
    abortUpdate,
    (r) => {
      requested = { action: 'abort', by: r.by, reason: r.reason };
      // Interrupts whatever the rollout waits on (an activity, a pause); the rollback runs outside this scope.
      main.cancel();
      return status;
    },
    { validator: validateCaller },
  );

  const ref = { tenantId, modelId, version };
  let resolved: { artifactUri: string; stable: string | null };
  try {
    resolved = await steps.resolveRollout(ref);
  } catch (err) {
    status.failureReason = reasonOf(err).message;
    await CancellationScope.nonCancellable(() => undo.releaseRolloutLock(tenantId, modelId, wfId));
    status.finishedAt = Date.now();
    enter('rolled_back');
    throw ApplicationFailure.nonRetryable(`rollout of ${modelId}@${version} refused: ${status.failureReason}`, 'RolloutRefused');
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
    await steps.setRoute(tenantId, modelId, { stable: stable!, canary: version, canaryWeight: weight });
    status.weights = { stable, canary: version, canaryWeight: weight };
  };
  const analyse = async (spec: AnalysisSpec, stepIndex: number, windowStart: number): Promise<'passed' | 'failed' | 'interrupted'> => {
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

  /** The steps up to promotion; throws to roll back. Returns once the canary is the new stable. */
  const progress = async () => {
    enter('deploying');
    const applied = await steps.applyModelVersion({
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
    });
    canary = { cluster: applied.cluster, namespace: applied.namespace, name: applied.name };
    status.endpoint = applied.endpoint;
    enter('waiting_ready');
    await proxyActivities<KubernetesActivities>({
      startToCloseTimeout: `${Math.ceil(durationMs(strategy.readinessTimeout) / 1000) + 60}s`,
      heartbeatTimeout: '20 seconds',
      retry: { initialInterval: '1 second', maximumInterval: '10 seconds', maximumAttempts: 5, nonRetryableErrorTypes: NON_RETRYABLE },
    }).waitModelVersionReady(canary, durationMs(strategy.readinessTimeout));
    enter('probing');
    await probe.probeEndpoint(applied.endpoint, modelId);
    await steps.setVersionEndpoint(ref, applied.endpoint);
    if (stable === null) return;
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
          throw ApplicationFailure.nonRetryable(`analysis failed ${strategy.analysis.failureLimit} times in a row at step ${i}: ${last.message}`, 'AnalysisFailed');
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
      ? { message: `aborted by ${requested!.by}${requested!.reason ? `: ${requested!.reason}` : ''}`, kind: 'aborted' as const }
      : isCancellation(err)
        ? { message: 'the rollout workflow was cancelled', kind: 'aborted' as const }
        : err instanceof ApplicationFailure && err.type === 'AnalysisFailed'
          ? { message: err.message, kind: 'analysis_failed' as const }
          : reasonOf(err);
    await CancellationScope.nonCancellable(() => rollback(why));
    throw ApplicationFailure.nonRetryable(`rollout of ${modelId}@${version} rolled back: ${why.message}`, 'RolledBack', status);
  }

  enter('promoting');
  await CancellationScope.nonCancellable(async () => {
    await undo.setRoute(tenantId, modelId, { stable: version, canary: null });
    status.weights = { stable: version, canary: null, canaryWeight: 0 };
    if (stable !== null) await undo.scaleModelVersion(await undo.servedRefOf(input.cluster, tenantId, modelId, stable), 0);
    // Histories recorded before rollouts wrote lineage have no such activity at this point.
    if (patched('rollout-lineage')) {
      await undo.recordRolloutLineage(ref, wfId, { deploymentId: input.deploymentId, cluster: input.cluster, endpoint: status.endpoint, previousStable: stable });
    }
    await undo.releaseRolloutLock(tenantId, modelId, wfId);
  });
  status.finishedAt = Date.now();
  enter('promoted');
  return status;

  async function rollback(why: { message: string; kind: RolloutAlert['reason'] }): Promise<void> {
    status.failureReason = why.message;
    status.rollbackStartedAt = Date.now();
    enter('rolling_back');
    // Traffic first: from here on no user request reaches the canary, whatever the cleanup below takes.
    if (stable !== null) {
      await undo.setRoute(tenantId, modelId, { stable, canary: null });
      status.weights = { stable, canary: null, canaryWeight: 0 };
    }
    await undo.deleteModelVersion(canary ?? (await undo.servedRefOf(input.cluster, tenantId, modelId, version)));
    await undo.setVersionEndpoint(ref, null);
    await undo.markVersionRolledBack(ref, why.message);
    await undo.emitRolloutAlert({ tenantId, modelId, version, workflowId: wfId, reason: why.kind, message: why.message });
    await undo.releaseRolloutLock(tenantId, modelId, wfId);
    status.finishedAt = Date.now();
    enter('rolled_back');
  }
}

/** `ms`-style durations (validated by the API) to milliseconds, for the readiness deadline the activity checks. */
function durationMs(d: string): number {
  const m = /^(\d+)(ms|s|m|h)$/.exec(d);
  if (!m) throw ApplicationFailure.nonRetryable(`invalid duration '${d}'`, 'InvalidDuration');
  return Number(m[1]) * { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 }[m[2] as 'ms' | 's' | 'm' | 'h'];
}
