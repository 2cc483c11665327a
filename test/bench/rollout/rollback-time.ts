/**
 * Rollback benchmark (`npm run bench:rollback`), not a test: on a throw-away stack with a fresh kwok cluster and a
 * listening API + gateway, rolls out N canaries under steady traffic, turns each bad (30 % 5xx) once it takes traffic,
 * and prints min/median/max of the time from the canary going bad to 100 % stable in the routing state, and how many
 * requests reached the bad version in that window. The analysis settings are the integration test's fast ones.
 */
import { clustersOf } from '../../../common/config';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { bundleWorkflowCode } from '@temporalio/worker';
import { createPlatformActivities } from '../../../activities';
import { localEndpointKey, localEndpoints } from '../../../activities/kubernetes/endpoints';
import { buildApp } from '../../../api/app';
import { EmbedderRegistry, vectorStoreFromConfig } from '../../../common/knowledge';
import { createLogger } from '../../../common/logger';
import { s3StoreFromConfig } from '../../../common/objectstore';
import { RegistryStore } from '../../../common/store/registry';
import { RoutingStore } from '../../../common/store/routing';
import { TenantStore } from '../../../common/store/tenants';
import { startKubeCluster } from '../../../deploy/dev/kube/cluster';
import { startReferenceModelServer } from '../../../deploy/dev/model-server/server';
import { pollFor } from '../../../deploy/dev/process';
import { startWorker } from '../../../workers/bootstrap';
import { platformActivityDeps } from '../../../workers/platform-deps';
import { serveModel } from '../../support/gateway';
import { withScratchStack } from '../../support/scratch-stack';
import { quietLogger, runScript } from '../../support/script';

const TENANT = 'bench';
const TASK_QUEUE = 'bench-rollout';
const ANALYSIS = { interval: '2s', minRequests: 3, minSuccessRate: 0.9, failureLimit: 2, inconclusiveLimit: 20 };
const STEPS = [20, 50, 100].flatMap((w) => [{ setWeight: w }, { pause: { duration: '2s' } }, { analysis: {} }]);

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { runs: { type: 'string', default: '10' } } });
  const runs = Number(values.runs);
  const kubeDir = await mkdtemp(path.join(os.tmpdir(), 'llmhub-bench-kube-'));
  const kube = await startKubeCluster({ dataDir: kubeDir, fresh: true, randomPorts: true });
  try {
    await withScratchStack('bench-rollback', async ({ config, db, client, native }) => {
      const logger = createLogger('bench', 'error');
      const endpoints = new Map<string, string>();
      const worker = await startWorker({
        connection: native,
        namespace: 'default',
        taskQueue: TASK_QUEUE,
        activities: createPlatformActivities(
          await platformActivityDeps(config, db, {
            kubeConfigOf: (c) => (c === 'local' ? kube.kubeConfig() : undefined),
            endpointOf: localEndpoints(endpoints),
          }),
        ),
        workflows: {
          workflowBundle: await bundleWorkflowCode({
            workflowsPath: require.resolve('../../../workflows'),
            logger: quietLogger,
          }),
        },
        logger,
        handleSignals: false,
      });
      const vectors = await vectorStoreFromConfig(config);
      const app = await buildApp({
        db,
        temporal: client,
        objects: s3StoreFromConfig(config),
        taskQueue: TASK_QUEUE,
        logger,
        vectors,
        embedders: new EmbedderRegistry(config),
        platformBucket: config.PLATFORM_BUCKET,
        clusters: clustersOf(config.LLMHUB_CLUSTERS),
        gateway: { metricsFlushMs: 200, refreshMs: 500 },
      });
      const baseURL = `${await app.listen({ host: '127.0.0.1', port: 0 })}/v1`;
      const tenants = new TenantStore(db);
      await tenants.createTenant(TENANT, TENANT);
      const key = (await tenants.createApiKey(TENANT, 'bench', 'developer')).key;
      const registry = new RegistryStore(db);
      const routing = new RoutingStore(db);

      const results: { ms: number; badRequests: number }[] = [];
      for (let i = 0; i < runs; i++) {
        const modelId = `bench-${i}`;
        const [stable, canary] = await Promise.all([
          startReferenceModelServer({ name: `${modelId}-v1` }),
          startReferenceModelServer({ name: `${modelId}-v2` }),
        ]);
        await serveModel(db, TENANT, modelId, { v1: stable.url }, { stable: 'v1' });
        await registry.insertVersion(db, TENANT, {
          modelId,
          version: 'v2',
          artifactUri: `s3://models/${modelId}/v2`,
          workflowId: `bench/${modelId}`,
        });
        await registry.markVersionReady(TENANT, modelId, 'v2', { sizeBytes: 1, checksum: 'sha256:00', etag: null });
        endpoints.set(localEndpointKey({ tenantId: TENANT, modelId, version: 'v2' }), canary.url);

        // Steady traffic through the gateway, as applications send it, for the whole rollout.
        let running = true;
        const traffic = Promise.all(
          Array.from({ length: 3 }, async () => {
            while (running) {
              const res = await fetch(`${baseURL}/chat/completions`, {
                method: 'POST',
                headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
                body: JSON.stringify({ model: modelId, messages: [{ role: 'user', content: 'hello' }] }),
              }).catch(() => undefined);
              await res?.arrayBuffer();
            }
          }),
        );
        const res = await app.inject({
          method: 'POST',
          url: '/v1/deploy',
          headers: { authorization: `Bearer ${key}`, 'idempotency-key': `bench-${i}` },
          payload: {
            modelId,
            cluster: 'local',
            resources: { cpu: '500m', gpu: 0 },
            version: 'v2',
            strategy: { steps: STEPS, analysis: ANALYSIS },
          },
        });
        if (res.statusCode !== 202) throw new Error(`deploy answered ${res.statusCode}: ${res.body}`);
        await pollFor(
          'canary traffic',
          async () => ((await routing.getRoute(TENANT, modelId))?.canaryWeight ?? 0) > 0,
          120_000,
          50,
        );
        canary.faults.errorRate = 0.3;
        const wentBad = Date.now();
        const receivedBefore = canary.received();
        await pollFor(
          'stable 100 %',
          async () => (await routing.getRoute(TENANT, modelId))?.canary === null,
          120_000,
          20,
        );
        results.push({ ms: Date.now() - wentBad, badRequests: canary.received() - receivedBefore });
        running = false;
        await traffic;
        await Promise.all([stable.close(), canary.close()]);
        console.log(
          `run ${i + 1}/${runs}: ${results.at(-1)!.ms} ms, ${results.at(-1)!.badRequests} requests reached the bad canary`,
        );
      }
      await app.close();
      await worker.shutdown();
      const ms = results.map((r) => r.ms).sort((a, b) => a - b);
      const bad = results.map((r) => r.badRequests).sort((a, b) => a - b);
      const median = (xs: number[]) =>
        xs.length % 2 ? xs[(xs.length - 1) / 2]! : (xs[xs.length / 2 - 1]! + xs[xs.length / 2]!) / 2;
      console.log(
        `canary bad -> 100 % stable over ${runs} runs (analysis interval ${ANALYSIS.interval}, failureLimit ${ANALYSIS.failureLimit}):`,
      );
      console.log(`  time:                        min ${ms[0]} ms, median ${median(ms)} ms, max ${ms.at(-1)} ms`);
      console.log(`  requests to the bad version: min ${bad[0]}, median ${median(bad)}, max ${bad.at(-1)}`);
    });
  } finally {
    await kube.stop();
    await rm(kubeDir, { recursive: true, force: true });
  }
}

runScript(main);
