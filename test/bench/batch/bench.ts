/**
 * Batch benchmark (not a test): lines/s of a batch end to end (upload aside: from POST /v1/batches to `completed`,
 * its output file written) against the same requests sent straight to the gateway at the same concurrency
 * (BATCH_CONCURRENCY), in one run on one stack: the API and gateway in this process, a worker, a reference model
 * server answering at once. After a warm-up pass, the direct pass runs before and after the batch and is averaged, so
 * load that drifts during the run skews the ratio less. Prints the ratio batch / direct (goal >= 0.9), and where the
 * batch's time went (from its history: up to its first page, its pages, its output files).
 *
 * --layout picks where the roles run. `one` (the default until run 13): everything above in this process. `split`: as
 * production deploys them, the gateway role in its own process and the reference model server in another; this process
 * holds the API (for the batch's start), the batch's worker and the direct pass's client, so both passes cross the
 * same process boundary to the same gateway and upstream.
 *
 * With --rounds N it repeats the direct / batch / direct round N times and prints the median ratio. Each pass prints the
 * CPU its processes used per 1,000 lines (this process and the stack's servers, from /proc); with --profile DIR each
 * pass of each round also writes a V8 CPU profile of this process there (round-<r>-<pass>.cpuprofile).
 *
 *   npm run bench:batch [-- --lines 5000 --rounds 5 --profile /tmp/prof]
 */
import { mkdir } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import type { WorkflowHandle } from '@temporalio/client';
import { tsToMs } from '@temporalio/common/lib/time';
import { bundleWorkflowCode } from '@temporalio/worker';
import { Agent, request } from 'undici';
import { createPlatformActivities } from '../../../activities';
import { BATCH_CONCURRENCY } from '../../../activities/batch/limits';
import { buildApp } from '../../../api/app';
import { clustersOf } from '../../../common/config';
import { EmbedderRegistry, vectorStoreFromConfig } from '../../../common/knowledge';
import { createLogger } from '../../../common/logger';
import { s3StoreFromConfig } from '../../../common/objectstore';
import { StorageScopeStore } from '../../../common/store/storage-scope';
import { TenantStore } from '../../../common/store/tenants';
import { tenantStorage } from '../../../common/tenant-storage';
import { workflowId } from '../../../contracts/operations';
import { startReferenceModelServer } from '../../../deploy/dev/model-server/server';
import { freePort, pollFor, startProcess, type ManagedProcess } from '../../../deploy/dev/process';
import { API_NODE_FLAGS } from '../../../deploy/node-flags';
import { startWorker } from '../../../workers/bootstrap';
import { platformActivityDeps } from '../../../workers/platform-deps';
import { chatLines, multipart } from '../../support/batch';
import { serveModel } from '../../support/gateway';
import { withScratchStack } from '../../support/scratch-stack';
import { quietLogger, runScript } from '../../support/script';
import { cpuBetween, cpuByProcess, profiled } from '../cpu';

const ROOT = path.resolve(__dirname, '..', '..', '..');

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      lines: { type: 'string', default: '5000' },
      rounds: { type: 'string', default: '1' },
      profile: { type: 'string' },
      layout: { type: 'string', default: 'one' },
    },
  });
  const layout = values.layout;
  if (layout !== 'one' && layout !== 'split') throw new Error(`--layout is one or split, not ${layout}`);
  const profileDir = values.profile;
  if (profileDir) await mkdir(profileDir, { recursive: true });
  const n = Number(values.lines);
  const rounds = Number(values.rounds);
  await withScratchStack('bench-batch', async ({ config, env, dataDir, db, client, native }) => {
    const objects = s3StoreFromConfig(config);
    const scopes = new StorageScopeStore(db, config.LLMHUB_TENANT_BUCKET_PREFIX);
    await tenantStorage(scopes, objects).create('bench');
    const tenants = new TenantStore(db);
    await tenants.createTenant('bench', 'bench');
    const key = (await tenants.createApiKey('bench', 'bench', 'developer')).key;
    const procs: ManagedProcess[] = [];
    const labels = new Map<number, string>();
    const spawnRole = async (name: string, script: string, args: string[], roleEnv: NodeJS.ProcessEnv = {}) => {
      const proc = await startProcess({
        name,
        command: process.execPath,
        args: [...API_NODE_FLAGS, '--import', 'tsx', path.join(ROOT, script), ...args],
        dataDir,
        env: { ...env, LOG_LEVEL: 'warn', NODE_OPTIONS: '', ...roleEnv },
      });
      procs.push(proc);
      labels.set(proc.pid, name);
      return proc;
    };
    let modelUrl: string;
    let closeModel = async () => undefined as void;
    if (layout === 'one') {
      const model = await startReferenceModelServer({ name: 'bench-batch' });
      modelUrl = model.url;
      closeModel = () => model.close();
    } else {
      const modelPort = await freePort();
      await spawnRole('model', 'deploy/dev/model-server/main.ts', [
        '--port',
        String(modelPort),
        '--name',
        'bench-batch',
      ]);
      modelUrl = `http://127.0.0.1:${modelPort}/v1`;
    }
    await serveModel(db, 'bench', 'fast', { v1: modelUrl }, { stable: 'v1' });
    const logger = createLogger('bench', 'warn');
    const port = await freePort();
    const gatewayUrl = `http://127.0.0.1:${port}`;
    const app = await buildApp({
      db,
      temporal: client,
      objects,
      taskQueue: 'bench',
      logger,
      vectors: await vectorStoreFromConfig(config),
      embedders: new EmbedderRegistry(config),
      platformBucket: config.PLATFORM_BUCKET,
      clusters: clustersOf(config.LLMHUB_CLUSTERS),
    });
    if (layout === 'one') await app.listen({ host: '127.0.0.1', port });
    else await spawnRole('gateway', 'roles/gateway.ts', [], { API_PORT: String(port) });
    const worker = await startWorker({
      connection: native,
      namespace: 'default',
      taskQueue: 'bench',
      activities: createPlatformActivities(await platformActivityDeps(config, db, { objects, gatewayUrl })),
      workflows: {
        workflowBundle: await bundleWorkflowCode({
          workflowsPath: require.resolve('../../../workflows'),
          logger: quietLogger,
        }),
      },
      logger,
      handleSignals: false,
    });
    const headers = { authorization: `Bearer ${key}`, 'content-type': 'application/json' };
    const dispatcher = new Agent({ connections: BATCH_CONCURRENCY, keepAliveTimeout: 30_000 });
    try {
      await pollFor(
        'the gateway to route the model',
        async () =>
          (
            await fetch(`${gatewayUrl}/v1/embeddings`, {
              method: 'POST',
              headers,
              body: JSON.stringify({ model: 'fast', input: 'x' }),
            })
          ).ok,
        120_000,
        100,
      );
      const lines = chatLines('fast', n)
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as { url: string; body: unknown });

      /**
       * The same requests straight to the gateway, BATCH_CONCURRENCY at a time, with the client the batch's worker uses
       * (undici on keep-alive connections): the ratio is then the batch's own cost, not a cheaper client's gain.
       */
      const direct = async (): Promise<number> => {
        const t = performance.now();
        let next = 0;
        await Promise.all(
          Array.from({ length: BATCH_CONCURRENCY }, async () => {
            while (next < lines.length) {
              const line = lines[next++]!;
              const res = await request(`${gatewayUrl}${line.url}`, {
                method: 'POST',
                headers,
                body: JSON.stringify(line.body),
                dispatcher,
              });
              await res.body.text();
              if (res.statusCode >= 400) throw new Error(`direct call answered ${res.statusCode}`);
            }
          }),
        );
        return n / ((performance.now() - t) / 1000);
      };
      // A first pass warms the gateway (compiled code, connections, caches): a cold "before" made the ratio look better.
      await direct();
      const { payload, contentType } = await multipart(chatLines('fast', n));
      const file = await app.inject({
        method: 'POST',
        url: '/v1/files',
        headers: { authorization: headers.authorization, 'content-type': contentType },
        payload,
      });

      const cpuLines: string[] = [];
      /**
       * Runs one pass, noting the CPU each process used per 1,000 lines, and this process's by thread (and profiling it
       * with --profile): the batch's extra CPU is in this process, and its threads say whether that is the event loop's
       * own work or Temporal's core, the libuv pool or V8's helpers (GC, compiler) beside it.
       */
      const pass = async <T>(name: string, fn: () => Promise<T>): Promise<T> => {
        const read = () => cpuByProcess({ labels, threads: true });
        const at = read();
        const wall = performance.now();
        const result = profileDir ? await profiled(path.join(profileDir, `${name}.cpuprofile`), fn) : await fn();
        const per1k = (s: number) => ((s * 1000) / n).toFixed(2);
        const used = cpuBetween(at, read());
        const sum = (xs: [string, number][]) => xs.reduce((a, [, s]) => a + s, 0);
        const threads = new Map<string, number>();
        for (const [p, s] of used) {
          const group = threadGroup(p);
          if (group) threads.set(group, (threads.get(group) ?? 0) + s);
        }
        const benchThreads = [...threads.entries()].sort(([, a], [, b]) => b - a);
        const processes: [string, number][] = [
          ['bench', sum(benchThreads)],
          ...used.filter(([p]) => threadGroup(p) === undefined),
        ];
        cpuLines.push(
          `CPU s per 1,000 lines, ${name} (${((performance.now() - wall) / 1000).toFixed(1)} s wall): ${per1k(
            sum(used),
          )} = ${processes.map(([p, s]) => `${p} ${per1k(s)}`).join(', ')}; bench by thread: ${benchThreads
            .map(([p, s]) => `${p} ${per1k(s)}`)
            .join(', ')}`,
        );
        return result;
      };

      /** One round: direct, the batch, direct again; its ratio is the batch's rate over the two direct rates' mean. */
      const round = async (r: number): Promise<{ ratio: number; pages: number }> => {
        cpuLines.length = 0;
        const before = await pass(`round-${r}-direct-before`, direct);
        // Timed inside the pass: a profile's start and writing are not the batch's.
        const { batchId, batchWall, postedAt, endedAt } = await pass(`round-${r}-batch`, async () => {
          const t = performance.now();
          const posted = Date.now();
          const created = await app.inject({
            method: 'POST',
            url: '/v1/batches',
            headers,
            payload: { input_file_id: file.json().id, endpoint: '/v1/chat/completions', completion_window: '24h' },
          });
          const id = created.json().id as string;
          await client.workflow.getHandle(workflowId('batch', 'bench', id)).result();
          return { batchId: id, batchWall: (performance.now() - t) / 1000, postedAt: posted, endedAt: Date.now() };
        });
        const handle = client.workflow.getHandle(workflowId('batch', 'bench', batchId));
        const phases = phasesOf((await handle.fetchHistory()).events ?? []);
        const done = (await app.inject({ method: 'GET', url: `/v1/batches/${batchId}`, headers })).json();
        const batchRate = done.request_counts.completed / batchWall;

        const after = await pass(`round-${r}-direct-after`, direct);
        const directRate = (before + after) / 2;
        const ratio = batchRate / directRate;
        console.log(
          `${n} chat lines, concurrency ${BATCH_CONCURRENCY}, layout ${layout}; load average ${os
            .loadavg()
            .map((l) => l.toFixed(2))
            .join(' ')}`,
        );
        console.log(
          `direct to the gateway: ${directRate.toFixed(1)} lines/s (before ${before.toFixed(1)}, after ${after.toFixed(1)})`,
        );
        console.log(
          `batch: ${batchWall.toFixed(1)} s = ${batchRate.toFixed(1)} lines/s (${done.request_counts.completed} completed, ${done.request_counts.failed} failed)`,
        );
        console.log(`ratio batch / direct: ${ratio.toFixed(2)} (goal >= 0.9)`);
        for (const l of cpuLines) console.log(l);
        const page = phases.batchPage!;
        const secs = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
        // The pages alone, without the fixed steps around them (start, output files): the batch's steady rate.
        const pagesRate = n / ((page.last - page.first) / 1000);
        console.log(
          `where the batch's time went: to its first page ${secs(page.first - postedAt)} (batchStarted scheduled at ${secs(
            phases.batchStarted!.first - postedAt,
          )}, done at ${secs(phases.batchStarted!.last - postedAt)}), its pages ${secs(
            page.last - page.first,
          )} (${pagesRate.toFixed(1)} lines/s, ${(pagesRate / directRate).toFixed(2)} of direct), output files ${secs(
            phases.batchFinish!.last - phases.batchFinish!.first,
          )}, to the result ${secs(endedAt - phases.batchFinish!.last)}`,
        );
        return { ratio, pages: pagesRate / directRate };
      };
      const ratios: number[] = [];
      const pageRatios: number[] = [];
      for (let r = 1; r <= rounds; r++) {
        console.log(`round ${r} of ${rounds}`);
        const { ratio, pages } = await round(r);
        ratios.push(ratio);
        pageRatios.push(pages);
      }
      if (rounds > 1) {
        const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(rounds / 2)]!.toFixed(2);
        const list = (xs: number[]) => xs.map((x) => x.toFixed(2)).join(', ');
        console.log(
          `median ratio over ${rounds} rounds: ${median(ratios)} (rounds: ${list(ratios)}; goal >= 0.9); the pages alone: median ${median(
            pageRatios,
          )} of direct (${list(pageRatios)})`,
        );
      }
    } finally {
      await worker.shutdown();
      await dispatcher.close();
      await app.close();
      await closeModel();
      for (const proc of procs) await proc.stop();
    }
  });
}

/**
 * The group of one of this process's threads as `cpuByProcess` names them (undefined for another process): Linux
 * shortens thread names to 15 characters, so Temporal core's tokio workers are `tokio-runtime-w`, V8's platform workers
 * `V8 DefaultWorke`, libuv's pool `libuv-worker`.
 */
function threadGroup(name: string): string | undefined {
  if (name === 'event loop') return name;
  if (!name.startsWith('thread ')) return undefined;
  const t = name.slice('thread '.length);
  if (/^tokio|^core|temporal/i.test(t)) return 'Temporal core';
  if (/^libuv/.test(t)) return 'libuv pool';
  if (/^V8|DelayedTask|DefaultWorke/.test(t)) return 'V8 helpers';
  return `thread ${t}`;
}

/** Per activity type, when its first task was scheduled and its last completed (epoch ms), from the history. */
function phasesOf(
  events: NonNullable<Awaited<ReturnType<WorkflowHandle['fetchHistory']>>['events']>,
): Record<string, { first: number; last: number }> {
  const typeOf = new Map<string, string>();
  const phases: Record<string, { first: number; last: number }> = {};
  for (const e of events) {
    const scheduled = e.activityTaskScheduledEventAttributes;
    const completed = e.activityTaskCompletedEventAttributes;
    if (scheduled) {
      const type = scheduled.activityType?.name ?? '';
      typeOf.set(String(e.eventId), type);
      phases[type] ??= { first: tsToMs(e.eventTime), last: 0 };
    } else if (completed) {
      const phase = phases[typeOf.get(String(completed.scheduledEventId)) ?? ''];
      if (phase) phase.last = Math.max(phase.last, tsToMs(e.eventTime));
    }
  }
  return phases;
}

runScript(main);
