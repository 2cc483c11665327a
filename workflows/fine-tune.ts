import {
  ApplicationFailure,
  CancellationScope,
  isCancellation,
  proxyActivities,
  workflowInfo,
} from '@temporalio/workflow';
import { messageOf } from './support/failures';
import type { FineTuneActivities, ResolvedFineTune } from '../activities/fine-tune';
import type { TrainingJobActivities, TrainingJobObservation, TrainingJobRef } from '../activities/kubernetes/jobs';
import { ClusterFailures } from '../contracts/cluster';
import {
  fineTuneContract,
  FineTuneFailures,
  TrainerEnv,
  type FineTuneInput,
  type FineTuneStatus,
} from '../contracts/fine-tune';
import { trackStatus } from './support/status';

const NON_RETRYABLE = [
  FineTuneFailures.baseVersionNotReady,
  FineTuneFailures.datasetNotFound,
  FineTuneFailures.outputVersionExists,
  FineTuneFailures.outputMissing,
  FineTuneFailures.claimReleased,
  ClusterFailures.invalidManifest,
  ClusterFailures.unknownCluster,
  FineTuneFailures.trainingFailed,
];
const steps = proxyActivities<FineTuneActivities & TrainingJobActivities>({
  startToCloseTimeout: '2 minutes',
  heartbeatTimeout: '1 minute',
  retry: {
    initialInterval: '1 second',
    maximumInterval: '15 seconds',
    maximumAttempts: 10,
    nonRetryableErrorTypes: NON_RETRYABLE,
  },
});
/** Queue waits and Job watches last long; they heartbeat, so a lost worker is noticed within the heartbeat timeout. */
const waits = proxyActivities<FineTuneActivities & TrainingJobActivities>({
  startToCloseTimeout: '30 days',
  heartbeatTimeout: '30 seconds',
  retry: {
    initialInterval: '1 second',
    maximumInterval: '15 seconds',
    maximumAttempts: 20,
    nonRetryableErrorTypes: NON_RETRYABLE,
  },
});
/** Cleanup (GPU claim, Job): no attempt limit, it must end done; each is idempotent. */
const undo = proxyActivities<FineTuneActivities & TrainingJobActivities>({
  startToCloseTimeout: '1 minute',
  retry: { initialInterval: '1 second', maximumInterval: '30 seconds' },
});

/** How often at most the watch reports progress into history: one report per interval keeps long runs' histories small. */
const REPORT_EVERY_MS = 2_000;

/**
 * One fine-tune: validate → wait for the tenant's GPU quota (queued, by priority) → a Kubernetes Job per attempt,
 * watched for progress → on a lost pod (eviction, node loss) a new Job resuming from the latest checkpoint, a bounded
 * number of times → register the merged weights as a new version with lineage. The GPU claim and the Job are
 * released on every way out, cancellation included.
 */
export async function fineTune(input: FineTuneInput): Promise<FineTuneStatus> {
  const wfId = workflowInfo().workflowId;
  const status: FineTuneStatus = {
    phase: 'validating',
    fineTuneId: input.fineTuneId,
    base: input.base,
    output: input.output,
    method: input.method,
    gpuCount: input.resources.gpuCount,
    job: null,
    progress: null,
    resumptions: [],
    result: null,
    failureReason: null,
    timeline: { queuedAt: null, claimedAt: null, finishedAt: null },
  };
  const enter = trackStatus(fineTuneContract.statusQuery, status, 'phase');
  const see = (o: TrainingJobObservation) => {
    if (status.job) Object.assign(status.job, { podPhase: o.podPhase, node: o.node, pendingReason: o.pendingReason });
    if (o.progress) {
      const p = o.progress;
      status.progress = {
        step: p.step,
        totalSteps: p.totalSteps,
        lossCurve: p.loss,
        evalLoss: p.evalLoss,
        checkpointStep: p.checkpoint?.step ?? null,
      };
    }
  };

  let job: TrainingJobRef | undefined;
  let claimed = false;
  try {
    const run: ResolvedFineTune = await steps.resolveFineTune(input, wfId);
    enter('queued');
    status.timeline.queuedAt = Date.now();
    claimed = true;
    await waits.waitForGpus({
      tenantId: input.tenantId,
      workflowId: wfId,
      gpus: input.resources.gpuCount,
      priority: input.priority,
    });
    status.timeline.claimedAt = Date.now();

    let resumeFrom: { step: number; uri: string } | null = null;
    let last: TrainingJobObservation | null = null;
    for (let attempt = 1; ; attempt++) {
      enter(attempt === 1 ? 'starting' : 'resuming');
      // Not cancellable: a cancel must not leave an apply running on that the cleanup's delete cannot see.
      job = await CancellationScope.nonCancellable(() =>
        steps.applyTrainingJob({
          cluster: input.cluster,
          tenantId: input.tenantId,
          modelId: input.output.modelId,
          version: input.output.version,
          workflowId: wfId,
          fineTuneId: input.fineTuneId,
          attempt,
          resources: input.resources,
          env: {
            [TrainerEnv.runPrefix]: run.runPrefix,
            [TrainerEnv.baseModelUri]: run.baseArtifactUri,
            [TrainerEnv.datasetUri]: input.datasetUri,
            [TrainerEnv.method]: input.method,
            [TrainerEnv.hyperparameters]: JSON.stringify(input.hyperparameters),
            [TrainerEnv.resumeFrom]: resumeFrom?.uri ?? '',
            [TrainerEnv.attempt]: String(attempt),
          },
          deadlineSeconds: input.jobDeadlineSeconds,
        }),
      );
      status.job = { name: job.name, attempt, podPhase: null, node: null, pendingReason: null };
      last = null;
      for (;;) {
        const o: TrainingJobObservation = await waits.watchTrainingJob(
          job,
          run.runPrefix,
          last && { state: last.state, step: last.progress?.step ?? 0, pendingReason: last.pendingReason },
          REPORT_EVERY_MS,
        );
        see(o);
        last = o;
        if (o.state === 'pending' || o.state === 'running') {
          if (status.phase !== o.state) enter(o.state);
          continue;
        }
        break;
      }
      if (last.state === 'succeeded') break;
      if (last.state === 'failed')
        throw ApplicationFailure.nonRetryable(`training failed: ${last.reason}`, FineTuneFailures.trainingFailed);
      // Lost: the pod went away under the trainer. Resume from the checkpoint it left, if there is one.
      if (attempt > input.maxResumptions) {
        throw ApplicationFailure.nonRetryable(
          `the trainer's pod was lost ${attempt} times (limit ${input.maxResumptions} resumptions): ${last.reason}`,
          FineTuneFailures.tooManyResumptions,
        );
      }
      await undo.deleteTrainingJob(job);
      resumeFrom = last.progress?.checkpoint ?? resumeFrom;
      status.resumptions.push({
        attempt: attempt + 1,
        fromStep: resumeFrom?.step ?? 0,
        reason: last.reason ?? 'pod lost',
      });
    }

    enter('registering');
    const result = await steps.registerFineTunedVersion(input, wfId, {
      ...run,
      checkpointUri: last.progress?.checkpoint?.uri ?? null,
      resumptions: status.resumptions.length,
    });
    status.result = { ...input.output, ...result };
    await CancellationScope.nonCancellable(() => cleanup());
    status.timeline.finishedAt = Date.now();
    enter('succeeded');
    return status;
  } catch (err) {
    const cancelled = isCancellation(err);
    status.failureReason = cancelled ? 'the fine-tune was cancelled' : messageOf(err);
    await CancellationScope.nonCancellable(() => cleanup());
    status.timeline.finishedAt = Date.now();
    enter(cancelled ? 'cancelled' : 'failed');
    if (cancelled) throw err;
    throw ApplicationFailure.nonRetryable(
      `fine-tune ${input.fineTuneId} failed: ${status.failureReason}`,
      FineTuneFailures.failed,
      status,
    );
  }

  async function cleanup(): Promise<void> {
    if (job) await undo.deleteTrainingJob(job);
    if (claimed) await undo.releaseGpus(input.tenantId, wfId);
  }
}
