import {
  ApplicationFailure,
  CancellationScope,
  condition,
  executeChild,
  isCancellation,
  patched,
  proxyActivities,
  setHandler,
  startChild,
} from '@temporalio/workflow';
import { messageOf } from './support/failures';
import type { ConversionActivities } from '../activities/conversion';
import type { RolloutActivities } from '../activities/rollout';
import { ConversionFailures, type ConversionInput, type ConversionResult } from '../contracts/conversion';
import type { FineTuneStatus } from '../contracts/fine-tune';
import { workflowId as workflowIdOf } from '../contracts/operations';
import {
  pipelineChildKey,
  pipelineContract,
  PipelineFailures,
  type PipelineInput,
  type PipelineStatus,
  type PipelineStep,
} from '../contracts/pipeline';
import { RolloutFailures } from '../contracts/rollout';
import { ModelIdKey, OperationKindKey, TenantIdKey } from '../contracts/search-attributes';
import { checkApprover, rejected } from './support/approvals';
import { trackStatus } from './support/status';
import { convertModel } from './conversion';
import { fineTune } from './fine-tune';
import { rolloutModel } from './rollout';

const acts = proxyActivities<ConversionActivities & RolloutActivities>({
  startToCloseTimeout: '1 minute',
  retry: {
    initialInterval: '1 second',
    maximumInterval: '15 seconds',
    maximumAttempts: 10,
    nonRetryableErrorTypes: [ConversionFailures.refused, RolloutFailures.rolloutInProgress],
  },
});
/** Giving up a claim no child took over: no attempt limit, it must end done; both are idempotent. */
const undo = proxyActivities<ConversionActivities & RolloutActivities>({
  startToCloseTimeout: '1 minute',
  retry: { initialInterval: '1 second', maximumInterval: '30 seconds' },
});

/**
 * Waiting for an identical conversion that is still running: one heartbeating activity, so the history stays a few
 * events however long the build takes. Bounded in all by the conversion's own execution timeout (a day) and a
 * margin; a row still running after that belongs to a run that died without saying so.
 */
const memo = proxyActivities<ConversionActivities>({
  startToCloseTimeout: '25 hours',
  scheduleToCloseTimeout: '25 hours',
  heartbeatTimeout: '1 minute',
  retry: {
    initialInterval: '1 second',
    maximumInterval: '30 seconds',
    maximumAttempts: 10,
    nonRetryableErrorTypes: [ConversionFailures.refused],
  },
});

class StepFailed extends Error {}

/**
 * Fine-tune → conversion of the produced version → optional approval gate → rollout of that version, each a
 * child workflow with an id derived from the pipeline's and the ModelId search attribute, so the whole chain is
 * findable by model. Stops at the first failure with its reason; cancelling the pipeline cancels the running child.
 */
export async function runPipeline(input: PipelineInput): Promise<PipelineStatus> {
  const { tenantId } = input;
  const childKey = pipelineChildKey(input.pipelineId);
  const model = { ...input.fineTune.output };
  const step = (kind: 'fine-tune' | 'conversion' | 'rollout'): PipelineStep => ({
    workflowId: workflowIdOf(kind, tenantId, childKey),
    outcome: 'pending',
    reason: null,
  });
  const status: PipelineStatus = {
    pipelineId: input.pipelineId,
    stage: 'fine_tune',
    model,
    steps: { fineTune: step('fine-tune'), conversion: step('conversion'), rollout: step('rollout') },
    conversion: null,
    awaitingApproval: false,
    approval: null,
    failureReason: null,
  };
  const enter = trackStatus(pipelineContract.statusQuery, status, 'stage');
  let decision: { decision: 'approve' | 'deny'; by: string; reason: string | null } | undefined;
  setHandler(
    pipelineContract.approvalUpdate,
    (r) => {
      decision = { decision: r.decision, by: r.by, reason: r.reason ?? null };
      return status;
    },
    {
      validator: (r) => {
        checkApprover(r, tenantId, 'pipeline');
        if (decision !== undefined)
          rejected(
            `the pipeline was already ${decision.decision === 'approve' ? 'approved' : 'denied'} by ${decision.by}`,
          );
        if (!status.awaitingApproval) rejected(`the pipeline does not wait for an approval; it is at ${status.stage}`);
      },
    },
  );
  const childAttributes = (kind: string) => [
    { key: TenantIdKey, value: tenantId },
    { key: ModelIdKey, value: model.modelId },
    { key: OperationKindKey, value: kind },
  ];
  /** Runs one step; a failure ends the pipeline with the step's reason. */
  const run = async <T>(s: PipelineStep, body: () => Promise<T>): Promise<T> => {
    s.outcome = 'running';
    try {
      const out = await body();
      if (s.outcome === 'running') s.outcome = 'succeeded';
      return out;
    } catch (err) {
      s.outcome = isCancellation(err) ? 'cancelled' : 'failed';
      s.reason = messageOf(err);
      throw err;
    }
  };
  // A claim made for a child that never started (cancelled or refused in between) has no one to release it.
  let unclaimed: (() => Promise<void>) | undefined;
  const fail = (s: PipelineStep, reason: string): never => {
    s.outcome = 'failed';
    s.reason = reason;
    throw new StepFailed(reason);
  };

  try {
    enter('fine_tune');
    await run(
      status.steps.fineTune,
      () =>
        executeChild(fineTune, {
          workflowId: status.steps.fineTune.workflowId,
          args: [{ ...input.fineTune, fineTuneId: childKey }],
          typedSearchAttributes: childAttributes('fine-tune'),
          staticSummary: `Pipeline ${input.pipelineId}: fine-tune into ${model.modelId}@${model.version}`,
        }) as Promise<FineTuneStatus>,
    );

    enter('conversion');
    const result = await run(status.steps.conversion, async (): Promise<ConversionResult> => {
      const planned = await acts.prepareConversion({
        tenantId,
        conversionId: childKey,
        workflowId: status.steps.conversion.workflowId,
        modelId: model.modelId,
        version: model.version,
        cluster: input.conversion.cluster,
        options: input.conversion.options,
      });
      if (planned.memo) {
        // The same artifact, options and toolchain were (or are being) converted: that outcome is this one.
        status.steps.conversion.workflowId = planned.memo.workflowId;
        let found = planned.memo;
        if (found.state === 'running') {
          if (!patched('pipeline-wait-running-conversion')) {
            status.steps.conversion.outcome = 'memoized';
            fail(status.steps.conversion, `an identical conversion is still running: ${found.workflowId}`);
          }
          // 'waiting' with the other run's workflow id tells an operator why the pipeline does not move.
          status.steps.conversion.outcome = 'waiting';
          found = await memo.awaitConversion(tenantId, found.conversionId);
        }
        status.steps.conversion.outcome = 'memoized';
        if (found.state === 'error')
          fail(
            status.steps.conversion,
            `the identical conversion ${found.workflowId} broke: ${found.error ?? 'no reason recorded'}`,
          );
        return {
          state: found.state as ConversionResult['state'],
          targets: found.targets,
          tritonRepositoryUri: found.tritonRepositoryUri ?? '',
        };
      }
      const conversionInput: ConversionInput = planned.input;
      unclaimed = () => undo.failConversion(conversionInput, 'the pipeline stopped before the conversion started');
      const child = await startChild(convertModel, {
        workflowId: status.steps.conversion.workflowId,
        args: [conversionInput],
        typedSearchAttributes: childAttributes('conversion'),
        staticSummary: `Pipeline ${input.pipelineId}: convert ${model.modelId}@${model.version}`,
      });
      // From here the conversion workflow owns its row, whatever happens.
      unclaimed = undefined;
      return child.result();
    });
    const published = result.targets.filter((t) => t.status === 'published').map((t) => t.target);
    status.conversion = { state: result.state, tritonRepositoryUri: result.tritonRepositoryUri, published };
    if (published.length === 0) {
      fail(
        status.steps.conversion,
        `no conversion target was published: ${result.targets.map((t) => `${t.target} ${t.status}${t.reason ? ` (${t.reason})` : ''}`).join('; ')}`,
      );
    }

    if (input.approvalBeforeRollout) {
      status.awaitingApproval = true;
      enter('awaiting_approval');
      const answered = await condition(() => decision !== undefined, `${input.approvalTimeoutSeconds}s`);
      status.awaitingApproval = false;
      const at = Date.now();
      if (!answered) {
        status.approval = { decision: 'timed_out', by: null, reason: null, at };
        status.steps.rollout.outcome = 'skipped';
        throw new StepFailed(`no approval within ${input.approvalTimeoutSeconds}s`);
      }
      status.approval = { ...decision!, at };
      if (decision!.decision === 'deny') {
        status.steps.rollout.outcome = 'skipped';
        throw new StepFailed(
          `the rollout was denied by ${decision!.by}${decision!.reason ? `: ${decision!.reason}` : ''}`,
        );
      }
    }

    enter('rollout');
    await run(status.steps.rollout, async () => {
      unclaimed = () => undo.releaseRolloutLock(tenantId, model.modelId, status.steps.rollout.workflowId);
      await acts.acquireRolloutLock({
        tenantId,
        modelId: model.modelId,
        deploymentId: childKey,
        workflowId: status.steps.rollout.workflowId,
      });
      const child = await startChild(rolloutModel, {
        workflowId: status.steps.rollout.workflowId,
        args: [{ ...input.rollout, modelId: model.modelId, version: model.version }],
        typedSearchAttributes: childAttributes('rollout'),
        staticSummary: `Pipeline ${input.pipelineId}: roll out ${model.modelId}@${model.version}`,
      });
      // The rollout workflow releases the lock itself on every way out.
      unclaimed = undefined;
      return child.result();
    });
    enter('succeeded');
    return status;
  } catch (err) {
    const cancelled = isCancellation(err);
    const stoppedAt = status.stage;
    const release = unclaimed;
    if (release) await CancellationScope.nonCancellable(release);
    status.failureReason = cancelled ? 'the pipeline was cancelled' : messageOf(err);
    status.awaitingApproval = false;
    enter(cancelled ? 'cancelled' : 'failed');
    if (cancelled) throw err;
    throw ApplicationFailure.nonRetryable(
      `pipeline ${input.pipelineId} stopped at ${stoppedAt}: ${status.failureReason}`,
      PipelineFailures.failed,
      status,
    );
  }
}
