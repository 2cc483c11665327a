import { Counter, Histogram, type Metric } from 'prom-client';
import type { IngestStage } from '.';

/** Registered into each worker's /metrics registry (workers/metrics.ts); the counters start at 0. */
export const ingestionDocumentsTotal = new Counter({
  name: 'llmhub_ingestion_documents_total',
  help: 'Documents handled by ingestion batches: indexed, skipped as unchanged, or failed to parse',
  labelNames: ['outcome'],
  registers: [],
});
for (const outcome of ['indexed', 'unchanged', 'failed']) ingestionDocumentsTotal.inc({ outcome }, 0);

export const ingestionChunksTotal = new Counter({
  name: 'llmhub_ingestion_chunks_total',
  help: 'Chunks embedded and written to the vector store',
  registers: [],
});

export const ingestionStageSeconds = new Histogram({
  name: 'llmhub_ingestion_stage_seconds',
  help: 'Time ingestion batches spend per pipeline stage (download waits, parse, embed, upsert, record)',
  labelNames: ['stage'],
  buckets: [0.001, 0.005, 0.02, 0.1, 0.5, 2, 10, 60],
  registers: [],
});

export const observeIngestStage = (stage: IngestStage, seconds: number): void =>
  ingestionStageSeconds.observe({ stage }, seconds);

export const ingestionMetrics: Metric[] = [ingestionDocumentsTotal, ingestionChunksTotal, ingestionStageSeconds];
