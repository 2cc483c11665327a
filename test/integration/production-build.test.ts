import { execFile } from 'node:child_process';
import { copyFile, cp, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { localEndpointKey } from '../../activities/kubernetes/endpoints';
import { loadConfig } from '../../common/config';
import { KUBECONFIG_ENV } from '../../deploy/dev/kube/cluster';
import { LOCAL_PROCESS_ANNOTATIONS, type LocalJobRunner } from '../../deploy/dev/kube/local-jobs';
import { startReferenceModelServer, type ReferenceModelServer } from '../../deploy/dev/model-server/server';
import { freePort, startProcess, tail, type ManagedProcess } from '../../deploy/dev/process';
import { seededMlp, startConversionJobRunner } from '../support/conversion';
import { GATEWAY_MUST_NOT_LOAD, GATEWAY_NEEDS, loadedModules, recordModules } from '../support/gateway-modules';
import {
  HYPERPARAMETERS,
  gpuNodes,
  prepare,
  referenceTrainer,
  startReferenceTrainerRunner,
  task,
} from '../support/fine-tune';
import {
  bearer,
  eventually,
  startTestPlatform,
  uniqueId,
  type TestPlatform,
  type TestTenant,
} from '../support/platform';
import { rolloutRequest } from '../support/rollout';

/**
 * The output of `npm run build`, with the production dependencies only (no tsx, no dev packages, no sources), run as
 * the three process roles (api, gateway, worker) against the shared stack; one operation of each kind goes in over
 * HTTP to the api, chats (the test's and the agent run's) go through the gateway. The worker is the only one polling
 * this file's task queue, and every workflow history is checked to have been worked by its identity, so each outcome
 * below is the built worker's.
 */
const ROOT = path.resolve(__dirname, '..', '..');
const run = promisify(execFile);
const config = loadConfig();
const nodes = gpuNodes();
let p: TestPlatform;
let acme: TestTenant;
let dir: string;
let api: string;
let gateway: string;
let apiProcess: ManagedProcess | undefined;
let gatewayProcess: ManagedProcess | undefined;
let workerProcess: ManagedProcess | undefined;
let runners: LocalJobRunner[] = [];
let model: ReferenceModelServer;
const started = Date.now();
const seconds = (since: number) => `${((Date.now() - since) / 1000).toFixed(1)} s`;

// Known before the worker starts: the kwok cluster runs no containers, so LLMHUB_LOCAL_ENDPOINTS maps the versions
// the rollouts serve to a reference model server.
const mlpModel = uniqueId('mlp');
const ftModel = uniqueId('ft');

/** Builds as CI does, and installs the locked production dependencies beside the output, away from the repo's. */
async function buildProduction(): Promise<void> {
  dir = await mkdtemp(path.join(os.tmpdir(), 'llmhub-production-'));
  for (const f of ['package.json', 'package-lock.json', '.npmrc'])
    await copyFile(path.join(ROOT, f), path.join(dir, f));
  const env = { ...process.env, NODE_OPTIONS: '', ONNXRUNTIME_NODE_INSTALL: 'skip' };
  // `npm ci` rejects this lockfile here (see scripts/setup.sh); install --no-save installs exactly the locked versions.
  await Promise.all([
    run('npm', ['run', 'build'], { cwd: ROOT, env, maxBuffer: 1 << 24 }),
    run(
      'npm',
      ['install', '--omit=dev', '--no-save', '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error'],
      { cwd: dir, env, maxBuffer: 1 << 24 },
    ),
  ]);
  await cp(path.join(ROOT, 'dist'), path.join(dir, 'dist'), { recursive: true });
}

/** `node dist/<entry>` from the production directory, configured by environment only, as in a container. */
const startBuilt = (
  name: string,
  entry: string,
  env: Record<string, string>,
  node: { args: string[]; env: Record<string, string> } = { args: [], env: {} },
): Promise<ManagedProcess> =>
  startProcess({
    name: uniqueId(name),
    command: process.execPath,
    args: [...node.args, path.join(dir, 'dist', entry)],
    dataDir: process.env.LLMHUB_TEST_DATA!,
    // No prebuilt workflow bundle: the built worker bundles dist/workflows itself.
    env: { ...env, ...node.env, LLMHUB_WORKFLOW_BUNDLE: '', NODE_OPTIONS: '', LOG_LEVEL: 'warn' },
  });
const gatewayModules = path.join(process.env.LLMHUB_TEST_DATA!, `${uniqueId('built-gateway-modules')}.txt`);

beforeAll(async () => {
  const kubeconfig = process.env[KUBECONFIG_ENV]!;
  const logDir = path.join(process.env.LLMHUB_TEST_DATA!, 'production-build-jobs');
  // Settled together, so that afterAll stops whatever did start when one of them fails.
  const [build, platform, trainerJobs, conversionJobs, server, gpus] = await Promise.allSettled([
    buildProduction(),
    startTestPlatform({ worker: false }),
    startReferenceTrainerRunner(kubeconfig, logDir),
    startConversionJobRunner(kubeconfig, logDir, config),
    startReferenceModelServer({ name: 'production-build' }),
    nodes.add(2),
  ]);
  if (platform.status === 'fulfilled') p = platform.value;
  runners = [trainerJobs, conversionJobs].flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
  if (server.status === 'fulfilled') model = server.value;
  for (const r of [build, platform, trainerJobs, conversionJobs, server, gpus])
    if (r.status === 'rejected') throw r.reason;
  console.log(`[production-build] build, production install and servers: ${seconds(started)}`);
  acme = await p.createTenant('prod');
  const [apiPort, gatewayPort] = [await freePort(), await freePort()];
  api = `http://127.0.0.1:${apiPort}`;
  gateway = `http://127.0.0.1:${gatewayPort}`;
  const env = {
    TEMPORAL_TASK_QUEUE: p.taskQueue,
    API_PORT: String(apiPort),
    // Agent runs call their model through the gateway role.
    LLMHUB_GATEWAY_URL: gateway,
    WORKER_METRICS_PORT: '0',
    LLMHUB_CLUSTERS: JSON.stringify({ local: { kubeconfig, jobPodAnnotations: LOCAL_PROCESS_ANNOTATIONS } }),
    LLMHUB_LOCAL_ENDPOINTS: JSON.stringify(
      Object.fromEntries(
        (
          [
            [mlpModel, '1'],
            [ftModel, 'piped'],
          ] as const
        ).map(([modelId, version]) => [localEndpointKey({ tenantId: acme.id, modelId, version }), model.url]),
      ),
    ),
    LLMHUB_TRAINER_IMAGE: referenceTrainer(config, 0).image,
  };
  [apiProcess, gatewayProcess, workerProcess] = await Promise.all([
    startBuilt('built-api', 'roles/api.js', env),
    startBuilt(
      'built-gateway',
      'roles/gateway.js',
      { ...env, API_PORT: String(gatewayPort) },
      recordModules(gatewayModules),
    ),
    startBuilt('built-worker', 'roles/worker.js', env),
  ]);
  await eventually('the built api and gateway to be ready', async () =>
    (await Promise.all([api, gateway].map(async (url) => (await fetch(`${url}/readyz`)).ok))).every(Boolean),
  );
}, 300_000);

afterAll(async () => {
  await Promise.all([apiProcess?.stop(), gatewayProcess?.stop(), workerProcess?.stop()]);
  await Promise.all(runners.map((r) => r.stop()));
  await model?.close();
  await nodes.removeAll();
  await p?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** One call to the built api (or `base`); JSON in and out unless `body` is raw bytes. */
async function call(
  key: string,
  method: string,
  url: string,
  body?: unknown,
  headers: Record<string, string> = {},
  base = api,
) {
  const raw = Buffer.isBuffer(body);
  const res = await fetch(`${base}${url}`, {
    method,
    headers: {
      ...bearer(key),
      ...(body === undefined ? {} : { 'content-type': raw ? 'application/octet-stream' : 'application/json' }),
      ...headers,
    },
    ...(body === undefined ? {} : { body: raw ? body : JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : undefined };
}

/** Starts an operation with POST (202) and waits for its workflow to end; returns what the POST answered. */
async function operate(url: string, body: unknown): Promise<Record<string, string>> {
  const res = await call(acme.keys.admin, 'POST', url, body, { 'idempotency-key': uniqueId('op') });
  if (res.status !== 202) throw new Error(`POST ${url}: ${res.status} ${JSON.stringify(res.body)}`);
  await p.temporal.workflow.getHandle(res.body.workflowId).result();
  return res.body;
}

const get = async (url: string) => {
  const res = await call(acme.keys.viewer, 'GET', url);
  expect(res.status).toBe(200);
  return res.body;
};

/** The identities that completed the workflow's tasks and started its activities. */
async function workedBy(workflowId: string): Promise<string[]> {
  const ids = new Set<string>();
  for (const e of (await p.temporal.workflow.getHandle(workflowId).fetchHistory()).events ?? []) {
    const identity = e.workflowTaskCompletedEventAttributes?.identity ?? e.activityTaskStartedEventAttributes?.identity;
    if (identity) ids.add(identity);
  }
  return [...ids];
}

const fineTuneRequest = (modelId: string, datasetUri: string, version: string) => ({
  baseModel: { modelId, version: 'base' },
  datasetUri,
  method: 'lora',
  hyperparameters: { ...HYPERPARAMETERS, totalSteps: 10, checkpointEverySteps: 5 },
  resources: { gpuCount: 1, gpuProduct: nodes.product, cpu: '500m', memory: '1Gi' },
  cluster: 'local',
  output: { version },
});
const conversionRequest = { cluster: 'local', targets: ['onnx'], profile: { runs: 5 } };

/** On a failure the built processes' own words say more than the failed wait. */
async function withProcessLogs(fn: () => Promise<void>): Promise<void> {
  try {
    await fn();
  } catch (err) {
    console.log(
      `--- built api ---\n${await tail(apiProcess!.logFile, 40)}\n--- built gateway ---\n${await tail(gatewayProcess!.logFile, 40)}\n--- built worker ---\n${await tail(workerProcess!.logFile, 40)}`,
    );
    throw err;
  }
}

describe('the production build', () => {
  it('serves every kind of operation from dist/ with production dependencies only', () =>
    withProcessLogs(async () => {
      const operating = Date.now();
      const workflows: string[] = [];
      const done = <T extends Record<string, string>>(op: T): T => {
        workflows.push(op.workflowId!);
        return op;
      };

      // Registry → conversion, and registry → rollout → an agent run through the built gateway to the rolled-out model.
      const served = (async () => {
        const key = `${acme.id}/${mlpModel}/1/model.safetensors`;
        await p.objects.put({ bucket: acme.bucket, key }, seededMlp([16, 64, 4], 7));
        expect((await call(acme.keys.developer, 'POST', '/v1/models', { id: mlpModel, name: mlpModel })).status).toBe(
          201,
        );
        done(
          await operate(`/v1/models/${mlpModel}/versions`, { version: '1', artifactUri: `s3://${acme.bucket}/${key}` }),
        );
        expect(await get(`/v1/models/${mlpModel}/versions/1`)).toMatchObject({
          state: 'ready',
          checksum: expect.stringMatching(/^sha256:[0-9a-f]{64}$/),
        });

        const conversion = async () => {
          const c = done(await operate('/v1/conversions', { modelId: mlpModel, version: '1', ...conversionRequest }));
          expect(await get(`/v1/conversions/${c.conversionId}`)).toMatchObject({
            state: 'succeeded',
            targets: [expect.objectContaining({ target: 'onnx', status: 'published' })],
          });
        };
        const rolloutThenAgent = async () => {
          const d = done(await operate('/v1/deploy', { ...rolloutRequest(mlpModel, {}), version: '1' }));
          expect(await get(`/v1/deployments/${d.deploymentId}`)).toMatchObject({ phase: 'promoted' });
          // The gateway role learns the new route by notification; the agent's model calls go through it too.
          await eventually('the built gateway to route the rolled-out model', async () => {
            const res = await call(
              acme.keys.developer,
              'POST',
              '/v1/chat/completions',
              { model: mlpModel, messages: [{ role: 'user', content: 'ping' }] },
              {},
              gateway,
            );
            return res.status === 200;
          });
          expect(
            (
              await call(acme.keys.developer, 'PUT', '/v1/agents/helper', {
                model: mlpModel,
                systemPrompt: 'Be brief.',
                tools: [],
              })
            ).status,
          ).toBe(200);
          const a = done(await operate('/v1/agent-runs', { agentId: 'helper', input: 'Say hello.' }));
          expect(await get(`/v1/agent-runs/${a.runId}`)).toMatchObject({
            phase: 'completed',
            answer: expect.any(String),
          });
        };
        await Promise.all([conversion(), rolloutThenAgent()]);
      })();

      // A fine-tune, and a pipeline (fine-tune → conversion → rollout) of the same base model; their trainers run as Job pods.
      const trained = (async () => {
        const { modelId, datasetUri } = await prepare(p, acme, task(11), ftModel);
        const fineTune = async () => {
          const f = done(await operate('/v1/fine-tunes', fineTuneRequest(modelId, datasetUri, 'solo')));
          expect(await get(`/v1/fine-tunes/${f.fineTuneId}`)).toMatchObject({
            phase: 'succeeded',
            progress: expect.objectContaining({ step: 10 }),
          });
          expect(await get(`/v1/models/${modelId}/versions/solo`)).toMatchObject({ state: 'ready' });
        };
        const pipeline = async () => {
          const rollout = { cluster: 'local', resources: { cpu: '500m', gpu: 0 }, env: {}, strategy: {} };
          const pl = done(
            await operate('/v1/pipelines', {
              fineTune: fineTuneRequest(modelId, datasetUri, 'piped'),
              conversion: conversionRequest,
              rollout,
            }),
          );
          expect(await get(`/v1/pipelines/${pl.pipelineId}`)).toMatchObject({
            stage: 'succeeded',
            model: { modelId, version: 'piped' },
          });
        };
        await Promise.all([fineTune(), pipeline()]);
      })();

      // An ingestion of an uploaded document, then a search: the built API embeds the query with the same model.
      const ingested = (async () => {
        const doc = Buffer.from('# Gardening\n\nTomatoes want full sun and deep watering twice a week.\n');
        expect((await call(acme.keys.developer, 'POST', '/v1/knowledge/garden/files?name=notes.md', doc)).status).toBe(
          201,
        );
        const i = done(await operate('/v1/knowledge/garden/ingestions', { source: { type: 'uploads' } }));
        expect(await get(i.statusUrl!)).toMatchObject({ phase: 'completed', done: 1, failed: 0 });
        const hits = await call(acme.keys.viewer, 'POST', '/v1/knowledge/garden/search', {
          query: 'growing red fruit',
          topK: 1,
        });
        expect(hits.body.hits[0]).toMatchObject({ documentId: 'notes.md' });
      })();

      await Promise.all([served, trained, ingested]);
      expect(model.requests.some((r) => r.path === '/v1/chat/completions')).toBe(true);
      // The test's chat and the agent run's model calls were the gateway role's; the api served none of them.
      const chats = async (base: string) => {
        const text = await (await fetch(`${base}/metrics`, { headers: bearer(p.operatorKey) })).text();
        const line = text
          .split('\n')
          .find((l) =>
            l.startsWith(
              `llmhub_gateway_requests_total{tenant="${acme.id}",model="${mlpModel}",version="1",status="200"}`,
            ),
          );
        return line ? Number(line.split(' ').pop()) : 0;
      };
      expect(await chats(api)).toBe(0);
      expect(await chats(gateway)).toBeGreaterThanOrEqual(2);
      const worker = `${workerProcess!.pid}@${os.hostname()}`;
      expect(workflows).toHaveLength(7);
      for (const id of workflows) expect({ id, workedBy: await workedBy(id) }).toEqual({ id, workedBy: [worker] });
      console.log(`[production-build] operations: ${seconds(operating)}; whole file: ${seconds(started)}`);
    }));

  it('runs the gateway role without the control routes’ modules', async () => {
    await gatewayProcess!.stop();
    const loaded = await loadedModules(gatewayModules);
    for (const needed of GATEWAY_NEEDS)
      expect({ needed, loaded: loaded.some((m) => needed.test(m)) }).toEqual({ needed, loaded: true });
    expect(loaded.filter((m) => GATEWAY_MUST_NOT_LOAD.some((f) => f.test(m)))).toEqual([]);
  });
});
