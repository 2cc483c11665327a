import {
  ActivityCancellationType,
  ActivityFailure,
  ApplicationFailure,
  CancellationScope,
  condition,
  continueAsNew,
  isCancellation,
  patched,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  workflowInfo,
} from '@temporalio/workflow';
import type { BatchActivities } from '../activities/batch';
import {
  BATCH_INPUT_FAILURE,
  batchContract,
  cancelBatchSignal,
  type BatchEnding,
  type BatchError,
  type BatchInput,
  type BatchProgress,
  type BatchRunStatus,
} from '../contracts/batch';
import { trackStatus } from './support/status';

const { batchStarted, batchFinish, batchFailed } = proxyActivities<BatchActivities>({
  startToCloseTimeout: '30 minutes',
  heartbeatTimeout: '1 minute',
  retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '1 minute' },
});
// A killed worker's page is picked up again within the heartbeat timeout; cancel waits for the lines in flight to stop,
// so the partial output is read after the last result was written.
const { batchPage } = proxyActivities<BatchActivities>({
  startToCloseTimeout: '6 hours',
  heartbeatTimeout: '10 seconds',
  cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
  retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '30 seconds' },
});

// A page that fails stops the batch and ends it `failed` through the catch below; before, its rejection went unhandled
// until every other page had run, and Temporal failed the run without moving the batch.
const PAGE_FAILURE_PATCH = 'batch-page-failure-stops';

// A batch whose input's page count came with it starts its first pages in the same workflow task as batchStarted: one
// activity and one workflow task less before the first line (about 0.1-0.3 s of a 5,000-line batch's 3-5 s). A failed
// check stops the pages as a failed page does.
const PAGES_BESIDE_START_PATCH = 'batch-pages-beside-start';

/** Past this many events a run continues as new, unless Temporal suggests it sooner. */
const HISTORY_EVENTS_BEFORE_CONTINUE = 4_000;
// Enough that the batch's line slots stay busy while finished pages hand over (their last writes, the next page's start).
const DEFAULT_PAGES_IN_FLIGHT = 8;

/**
 * A batch (`batch/<tenant>/<id>`): its input's pages, a few at a time, each through the gateway as the batch's creator
 * (activities/batch); then the output and error files. Cancel stops the lines in flight and ends `cancelled` with what
 * has a result; so does reaching the completion window, as `expired`. Only page numbers and counts enter the history.
 */
export async function batch(input: BatchInput): Promise<void> {
  const progress: BatchProgress = input.resume ?? {
    pagesDone: [],
    counts: { total: 0, completed: 0, failed: 0 },
    pages: 0,
  };
  const status: BatchRunStatus = {
    status: 'in_progress',
    requestCounts: progress.counts,
    pagesDone: progress.pagesDone.length,
    pages: progress.pages,
  };
  const enter = trackStatus(batchContract.statusQuery, status, 'status');
  const publish = () => {
    status.pagesDone = progress.pagesDone.length;
    status.pages = progress.pages;
    const c = progress.counts;
    setCurrentDetails(
      `**${status.status}**: ${c.completed} completed, ${c.failed} failed of ${c.total} requests (${status.pagesDone} of ${status.pages} pages)`,
    );
  };
  let cancelRequested = false;
  setHandler(cancelBatchSignal, () => {
    cancelRequested = true;
  });
  const ref = { tenantId: input.tenantId, batchId: input.batchId, bucket: input.bucket };

  let failure: unknown;
  let startCheck: Promise<void> | undefined;
  try {
    if (!input.resume) {
      if (input.pages !== undefined && input.total !== undefined && patched(PAGES_BESIDE_START_PATCH)) {
        progress.pages = input.pages;
        progress.counts.total = input.total;
        startCheck = batchStarted({ ...ref, inputFileId: input.inputFileId }).then(
          () => undefined,
          (err: unknown) => {
            // The input's own fault names the batch's errors, ahead of what a page made of the same input.
            failure = err;
          },
        );
      } else {
        const started = await batchStarted({ ...ref, inputFileId: input.inputFileId });
        progress.pages = started.pages;
        progress.counts.total = started.total;
      }
    }
    enter('in_progress');
    publish();

    const done = new Set(progress.pagesDone);
    const todo = Array.from({ length: progress.pages }, (_, i) => i).filter((p) => !done.has(p));
    const inFlightMax = input.pagesInFlight ?? DEFAULT_PAGES_IN_FLIGHT;
    const lines = new CancellationScope();
    const tasks: Promise<void>[] = [];
    let inFlight = 0;
    let startedHere = 0;
    // A timer needs a positive duration; an expired batch is stopped before any wait.
    const left = () => Math.max(1, input.expiresAt - Date.now());
    const stop = () => cancelRequested || failure !== undefined || Date.now() >= input.expiresAt;
    const shouldContinue = () => {
      const info = workflowInfo();
      return input.pagesPerRun !== undefined
        ? startedHere >= input.pagesPerRun
        : info.continueAsNewSuggested || info.historyLength > HISTORY_EVENTS_BEFORE_CONTINUE;
    };
    const runPage = async (page: number) => {
      try {
        const o = await lines.run(() => batchPage({ ...ref, ...pick(input), page }));
        progress.pagesDone.push(page);
        progress.counts.completed += o.completed;
        progress.counts.failed += o.failed;
        publish();
      } catch (err) {
        // A page stopped by cancel or expiry leaves its written results for the partial output.
        if (isCancellation(err)) return;
        if (!patched(PAGE_FAILURE_PATCH)) throw err;
        failure ??= err;
      } finally {
        inFlight--;
      }
    };

    let continuing = false;
    for (const page of todo) {
      if (stop()) break;
      await condition(() => inFlight < inFlightMax || cancelRequested || failure !== undefined, left());
      if (stop()) break;
      if (shouldContinue()) {
        continuing = true;
        break;
      }
      inFlight++;
      startedHere++;
      tasks.push(runPage(page));
    }
    if (!stop()) await condition(() => inFlight === 0 || cancelRequested || failure !== undefined, left());
    // The start's checks end before anything else: its move to in_progress must come before the batch's end, and a run
    // must not continue as new with it in flight.
    await startCheck;
    if (failure !== undefined) {
      lines.cancel();
      await Promise.all(tasks);
      throw failure;
    }
    let ending: BatchEnding = 'completed';
    if (stop()) {
      ending = cancelRequested ? 'cancelled' : 'expired';
      enter(cancelRequested ? 'cancelling' : 'finalizing');
      publish();
      lines.cancel();
    }
    await Promise.all(tasks);
    // A cancel that came while this run was handing over ends the batch here instead.
    if (continuing && !stop()) {
      return await continueAsNew<typeof batch>({ ...input, resume: progress });
    }
    enter('finalizing');
    publish();
    const outputs = {
      outputFileId: `${input.inputFileId}-${input.batchId}-output`,
      errorFileId: `${input.inputFileId}-${input.batchId}-error`,
    };
    const finished = await batchFinish({ ...ref, ...outputs, ending, pages: progress.pages });
    progress.counts.completed = finished.completed;
    progress.counts.failed = finished.failed;
    enter(ending);
    publish();
  } catch (err) {
    if (isCancellation(err)) throw err;
    await batchFailed({ ...ref, ...errorsOf(err) });
    enter('failed');
    publish();
    throw err;
  }
}

/** The batch's own errors when an activity found its input unusable (activities/batch); none for other failures. */
function errorsOf(err: unknown): { errors?: BatchError[] } {
  const cause = err instanceof ActivityFailure ? err.cause : undefined;
  if (!(cause instanceof ApplicationFailure) || cause.type !== BATCH_INPUT_FAILURE) return {};
  return { errors: [cause.details?.[0] as BatchError] };
}

const pick = (i: BatchInput) => ({
  endpoint: i.endpoint,
  inputFileId: i.inputFileId,
  subject: i.subject,
  roles: i.roles,
});
