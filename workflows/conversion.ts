import { ApplicationFailure, CancellationScope, isCancellation, patched, proxyActivities } from '@temporalio/workflow';
import { messageOf, rootCause } from './support/failures';
import type { ConversionActivities } from '../activities/conversion';
import { ClusterFailures } from '../contracts/cluster';
import {
  conversionContract,
  ConversionFailures,
  type ConversionInput,
  type ConversionResult,
  type ConversionStatus,
  type ConversionStep,
  type OnnxTarget,
  type StepReport,
  type TargetResult,
} from '../contracts/conversion';
import { trackStatus } from './support/status';

/** Histories from before it ended a cancelled run failed (phase `error`) and could be cancelled mid-publish. */
const CANCELLED_PATCH = 'conversion-ends-cancelled';
/** A step is a Kubernetes Job the activity creates and waits for; a GPU build may wait long for a node, hence the hours. */
const { runConversionStep } = proxyActivities<ConversionActivities>({
  startToCloseTimeout: '4 hours',
  heartbeatTimeout: '1 minute',
  retry: {
    initialInterval: '2 seconds',
    maximumInterval: '30 seconds',
    maximumAttempts: 5,
    nonRetryableErrorTypes: [
      ConversionFailures.stepFailed,
      ClusterFailures.unknownCluster,
      ClusterFailures.invalidManifest,
    ],
  },
});
/** Recording the outcome must end done, even for a cancelled run: idempotent, retried at length. */
const { completeConversion, failConversion } = proxyActivities<ConversionActivities>({
  startToCloseTimeout: '2 minutes',
  retry: { initialInterval: '1 second', maximumInterval: '30 seconds', maximumAttempts: 50 },
});

function failureOf(err: unknown): { message: string; stepFailed: boolean } {
  const cause = rootCause(err);
  return {
    message: messageOf(err),
    stepFailed: cause instanceof ApplicationFailure && cause.type === ConversionFailures.stepFailed,
  };
}

const validationOf = (r: StepReport) => ({
  passed: r.passed ?? false,
  maxAbsError: r.maxAbsError ?? NaN,
  maxRelError: r.maxRelError ?? NaN,
  tolerance: r.tolerance ?? NaN,
  samples: r.samples ?? 0,
});

/**
 * Converts a model version: export to ONNX → per target, in parallel: optimise (onnx) or quantise (onnx-int8) →
 * correctness check against the reference forward pass (publishes the checked file into the Triton layout) → latency
 * profile; the TensorRT engine is built, checked and profiled by one Job on a GPU node, or reported not_run with the
 * reason → config.pbtxt per published target, artifacts registered on the version, outcome stored as the memo.
 * A target's failed step (e.g. out of tolerance) is that target's outcome; anything else that breaks the run
 * marks it `error`, which gives the memo key up.
 */
export async function convertModel(input: ConversionInput): Promise<ConversionResult> {
  const status: ConversionStatus = { phase: 'exporting', targets: [] };
  const enter = trackStatus(conversionContract.statusQuery, status, 'phase');
  const step = (s: ConversionStep) => runConversionStep(input, s);
  const settle = (r: TargetResult): TargetResult => {
    status.targets.push(r);
    return r;
  };
  /** A failed step ends its target with the reason; other failures end the run. */
  const orFailed = async (target: TargetResult['target'], run: () => Promise<TargetResult>): Promise<TargetResult> => {
    try {
      return settle(await run());
    } catch (err) {
      const f = failureOf(err);
      if (!f.stepFailed) throw err;
      return settle({ target, status: 'failed', reason: f.message });
    }
  };
  const onnxTarget = (target: OnnxTarget) =>
    orFailed(target, async () => {
      await step({ kind: 'optimize', target });
      const checked = await step({ kind: 'validate', target });
      if (!checked.passed)
        return {
          target,
          status: 'failed',
          reason: checked.error ?? 'out of tolerance',
          validation: validationOf(checked),
        };
      const p = await step({ kind: 'profile', target });
      return {
        target,
        status: 'published',
        validation: validationOf(checked),
        latency: {
          runs: p.runs ?? 0,
          batch: p.batch ?? 0,
          p50Ms: p.p50Ms ?? NaN,
          p95Ms: p.p95Ms ?? NaN,
          meanMs: p.meanMs ?? NaN,
          device: p.device ?? '',
        },
        artifact: { uri: checked.publishedUri!, sha256: checked.sha256!, sizeBytes: checked.sizeBytes! },
      };
    });
  const tensorrt = () =>
    orFailed('tensorrt', async () => {
      const built = await step({ kind: 'tensorrt' });
      if (built.status === 'not_run')
        return { target: 'tensorrt', status: 'not_run', reason: built.reason ?? 'not run' };
      if (!built.passed)
        return {
          target: 'tensorrt',
          status: 'failed',
          reason: built.error ?? 'out of tolerance',
          validation: validationOf(built),
        };
      return {
        target: 'tensorrt',
        status: 'published',
        validation: validationOf(built),
        ...(built.latency ? { latency: built.latency } : {}),
        artifact: { uri: built.publishedUri!, sha256: built.sha256!, sizeBytes: built.sizeBytes! },
      };
    });

  enter('exporting');
  try {
    let dims = { inputDim: 0, outputDim: 0 };
    let targets: TargetResult[];
    try {
      const exported = await step({ kind: 'export' });
      dims = { inputDim: exported.inputDim!, outputDim: exported.outputDim! };
      enter('converting');
      targets = await Promise.all(input.options.targets.map((t) => (t === 'tensorrt' ? tensorrt() : onnxTarget(t))));
    } catch (err) {
      const f = failureOf(err);
      if (!f.stepFailed) throw err;
      // The export failed for a reason of the model itself (not llmhub-mlp, corrupt): every target fails with it.
      targets = input.options.targets.map((target) => settle({ target, status: 'failed', reason: f.message }));
    }
    enter('publishing');
    // Once publishing has begun it ends: a cancel then must not leave a registered result whose files are removed.
    const publish = () => completeConversion(input, targets, dims);
    const result = await (patched(CANCELLED_PATCH) ? CancellationScope.nonCancellable(publish) : publish());
    status.targets = result.targets;
    enter(result.state);
    return result;
  } catch (err) {
    const cancelled = isCancellation(err) && patched(CANCELLED_PATCH);
    const message = cancelled ? 'the conversion was cancelled' : failureOf(err).message;
    status.error = message;
    // Even a cancelled run must stop its Jobs, leave its row saying why and give the memo key up.
    await CancellationScope.nonCancellable(() => failConversion(input, message));
    enter(cancelled ? 'cancelled' : 'error');
    if (cancelled) throw err;
    throw ApplicationFailure.nonRetryable(
      `conversion of ${input.modelId}@${input.version} broke: ${message}`,
      ConversionFailures.failed,
    );
  }
}
