import {
  ActivityCancellationType,
  CancellationScope,
  condition,
  continueAsNew,
  isCancellation,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  workflowInfo,
} from '@temporalio/workflow';
import type { BatchActivities } from '../activities/batch';
import {
  batchContract,
  cancelBatchSignal,
  type BatchEnding,
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

  try {
    if (!input.resume) {
      const started = await batchStarted({ ...ref, inputFileId: input.inputFileId });
      progress.pages = started.pages;
      progress.counts.total = started.total;
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
    const stop = () => cancelRequested || Date.now() >= input.expiresAt;
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
        if (!isCancellation(err)) throw err;
      } finally {
        inFlight--;
      }
    };

    let continuing = false;
    for (const page of todo) {
      if (stop()) break;
      await condition(() => inFlight < inFlightMax || cancelRequested, left());
      if (stop()) break;
      if (shouldContinue()) {
        continuing = true;
        break;
      }
      inFlight++;
      startedHere++;
      tasks.push(runPage(page));
    }
    if (!stop()) await condition(() => inFlight === 0 || cancelRequested, left());
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
    await batchFailed(ref);
    enter('failed');
    publish();
    throw err;
  }
}

const pick = (i: BatchInput) => ({
  endpoint: i.endpoint,
  inputFileId: i.inputFileId,
  subject: i.subject,
  roles: i.roles,
});
