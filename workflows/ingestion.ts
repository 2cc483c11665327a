import {
  allHandlersFinished,
  condition,
  continueAsNew,
  patched,
  proxyActivities,
  workflowInfo,
} from '@temporalio/workflow';
import type { BatchResult, KnowledgeActivities } from '../activities/knowledge';
import {
  ingestionContract,
  IngestionFailures,
  type IngestionInput,
  type IngestionProgress,
  type IngestionStats,
} from '../contracts/ingestion';
import { trackStatus } from './support/status';

/** What a continued run carries over: the manifest (by reference), where it stopped, and the tallies so far. */
export interface IngestionCarry {
  manifestUri: string;
  collection: string;
  nextBatch: number;
  progress: IngestionProgress;
}

const MAX_FAILURES_SHOWN = 100;
// Well under Temporal's 10,240-event warning: each batch costs ~6 events, so this leaves a wide margin.
const HISTORY_EVENTS_BEFORE_CONTINUE = 2_000;

const NON_RETRYABLE = [IngestionFailures.embedderMismatch, IngestionFailures.parserUnavailable];
const { prepareNamespace, listSource, removeMissing } = proxyActivities<KnowledgeActivities>({
  startToCloseTimeout: '10 minutes',
  heartbeatTimeout: '1 minute',
  retry: {
    initialInterval: '1 second',
    maximumInterval: '30 seconds',
    maximumAttempts: 10,
    nonRetryableErrorTypes: NON_RETRYABLE,
  },
});
const { ingestBatch } = proxyActivities<KnowledgeActivities>({
  startToCloseTimeout: '30 minutes',
  // A killed worker is noticed within this and the batch resumes from its last heartbeat on another attempt.
  heartbeatTimeout: '10 seconds',
  retry: {
    initialInterval: '1 second',
    maximumInterval: '30 seconds',
    maximumAttempts: 20,
    nonRetryableErrorTypes: NON_RETRYABLE,
  },
});

function add(p: IngestionProgress, r: BatchResult): void {
  p.done += r.done;
  p.skippedUnchanged += r.skippedUnchanged;
  p.failed += r.failures.length;
  p.chunksWritten += r.chunksWritten;
  p.failures.push(...r.failures.slice(0, Math.max(0, MAX_FAILURES_SHOWN - p.failures.length)));
  p.batchesDone++;
}

/**
 * Ingests a source into a knowledge namespace: list → batches of documents (bounded parallelism) →
 * remove documents that left the source. Continues as new before the history grows large.
 */
export async function ingestDocuments(input: IngestionInput, carry?: IngestionCarry): Promise<IngestionStats> {
  const progress: IngestionProgress = carry?.progress ?? {
    phase: 'listing',
    total: 0,
    done: 0,
    skippedUnchanged: 0,
    failed: 0,
    chunksWritten: 0,
    removed: 0,
    failures: [],
    batchesDone: 0,
    batchesTotal: 0,
  };
  const enter = trackStatus(ingestionContract.statusQuery, progress, 'phase');

  let state = carry;
  if (!state) {
    enter('listing');
    const { collection } = await prepareNamespace(input);
    const { manifestUri, total } = await listSource(input);
    progress.total = total;
    progress.batchesTotal = Math.ceil(total / input.batchSize);
    state = { manifestUri, collection, nextBatch: 0, progress };
  }
  enter('indexing');
  const { manifestUri, collection } = state;
  let next = state.nextBatch;
  const runBatch = async (b: number) =>
    add(
      progress,
      await ingestBatch({
        ...input,
        manifestUri,
        collection,
        from: b * input.batchSize,
        to: (b + 1) * input.batchSize,
      }),
    );

  const firstBatchOfRun = next;
  const timeForNewRun = () => {
    const info = workflowInfo();
    const runFull = input.batchesPerRun !== undefined && next - firstBatchOfRun >= input.batchesPerRun;
    return runFull || info.continueAsNewSuggested || info.historyLength > HISTORY_EVENTS_BEFORE_CONTINUE;
  };
  const continueFrom = async (nextBatch: number) => {
    await condition(allHandlersFinished);
    await continueAsNew<typeof ingestDocuments>(input, { manifestUri, collection, nextBatch, progress });
  };
  if (patched('ingestion-sliding-window')) {
    // A new batch starts as soon as any running one ends, so the serialised embedder never idles while a
    // wave's slowest batch finishes. Before continuing as new, running batches drain: the carried
    // nextBatch must mean "every batch before it is done".
    const running = new Map<number, Promise<number>>();
    let draining = false;
    while (running.size > 0 || (!draining && next < progress.batchesTotal)) {
      while (!draining && next < progress.batchesTotal && running.size < input.parallelism) {
        const b = next++;
        running.set(
          b,
          runBatch(b).then(() => b),
        );
      }
      running.delete(await Promise.race(running.values()));
      if (!draining && next < progress.batchesTotal && timeForNewRun()) draining = true;
    }
    if (draining) await continueFrom(next);
  } else {
    while (next < progress.batchesTotal) {
      const wave = Array.from(
        { length: Math.min(input.parallelism, progress.batchesTotal - next) },
        (_, i) => next + i,
      );
      await Promise.all(wave.map(runBatch));
      next += wave.length;
      if (next < progress.batchesTotal && timeForNewRun()) await continueFrom(next);
    }
  }

  enter('removing_deleted');
  progress.removed = await removeMissing({
    tenantId: input.tenantId,
    namespace: input.namespace,
    manifestUri,
    collection,
  });
  enter('completed');
  const { phase: _phase, failures: _failures, batchesDone: _d, batchesTotal: _t, ...stats } = progress;
  return stats;
}
