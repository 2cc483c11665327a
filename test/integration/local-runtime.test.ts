import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { RoutingStore } from '../../common/store/routing';
import { processRuntimesOf, stopAllProcesses } from '../../deploy/dev/local-runtime';
import { eventually, startTestPlatform, uniqueId, type TestPlatform, type TestTenant } from '../support/platform';
import { rolloutClient, rolloutRequest } from '../support/rollout';

/** Rollouts on a cluster whose runtime is "process": each version is a local reference model server the worker spawns. */
let p: TestPlatform;
let acme: TestTenant;
let api: ReturnType<typeof rolloutClient>;
let baseURL: string;
let tmp: string;
let stateDir: string;
const savedClusters = process.env.LLMHUB_CLUSTERS;
/** Seeded into the worker's environment (as a credential would be): no model process may see it. */
const MARKER = `worker-secret-${uniqueId('m')}`;

beforeAll(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'llmhub-local-runtime-'));
  // Not created beforehand: the runtime makes its state dir on the first apply.
  stateDir = path.join(tmp, 'state');
  // Configuration, not a test override: the API validates cluster names and the dev runtime is built from it, as the
  // dev stack's worker does (deploy/dev/worker.ts).
  process.env.LLMHUB_CLUSTERS = JSON.stringify({ local: {}, laptop: { runtime: 'process', stateDir } });
  process.env.LLMHUB_TEST_MARKER = MARKER;
  p = await startTestPlatform({
    gateway: { metricsFlushMs: 200, refreshMs: 500 },
    activityDeps: {
      modelRuntimeOf: processRuntimesOf(process.env.LLMHUB_CLUSTERS),
      autoscale: { syncMs: 500, windowMs: 3_000 },
    },
  });
  baseURL = `${await p.app.listen({ host: '127.0.0.1', port: 0 })}/v1`;
  acme = await p.createTenant('acme');
  api = rolloutClient(p, acme);
});
afterAll(async () => {
  await p?.close();
  if (tmp) {
    await stopAllProcesses(stateDir);
    await rm(tmp, { recursive: true, force: true });
  }
  process.env.LLMHUB_CLUSTERS = savedClusters;
  delete process.env.LLMHUB_TEST_MARKER;
});

const request = (modelId: string, version: string, strategy: object) => ({
  ...rolloutRequest(modelId, strategy),
  cluster: 'laptop',
  version,
});

async function addVersion(modelId: string, version: string) {
  await p.registry.insertVersion(p.db, acme.id, {
    modelId,
    version,
    artifactUri: `s3://models/${modelId}/${version}`,
    workflowId: `test/${modelId}/${version}`,
  });
  await p.registry.markVersionReady(acme.id, modelId, version, { sizeBytes: 1, checksum: 'sha256:00', etag: null });
}

/** The models a version's own process lists, or undefined when nothing answers at its endpoint. */
const modelsAt = (endpoint: string): Promise<string[] | undefined> =>
  fetch(`${endpoint}/models`, { signal: AbortSignal.timeout(5_000) }).then(
    async (r) => ((await r.json()) as { data: { id: string }[] }).data.map((m) => m.id),
    () => undefined,
  );

/** Which version the listening gateway served a chat completion from. */
async function servedVersion(modelId: string): Promise<string | null> {
  const res = await fetch(`${baseURL}/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${acme.keys.developer}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: modelId, messages: [{ role: 'user', content: 'hello' }] }),
  });
  expect(res.status).toBe(200);
  return res.headers.get('x-llmhub-model-version');
}

async function deploy(modelId: string, version: string, strategy: object, extra: object = {}): Promise<string> {
  await addVersion(modelId, version);
  return redeploy(modelId, version, strategy, extra);
}

async function redeploy(modelId: string, version: string, strategy: object, extra: object = {}): Promise<string> {
  const res = await api.deploy({ ...request(modelId, version, strategy), ...extra });
  expect(res.statusCode).toBe(202);
  return res.json().deploymentId;
}

describe('the process model runtime', () => {
  it('rolls versions out to local processes behind the gateway, and a rollback stops the canary process', async () => {
    const modelId = uniqueId('m');
    await p.registry.createModel(acme.id, { id: modelId, name: modelId, description: 'served by local processes' });

    // v1: a first rollout (no stable yet) spawns its process and routes the model to it.
    const first = await api.untilPhase(await deploy(modelId, 'v1', {}), 'promoted', 'rolled_back');
    expect({ phase: first.phase, reason: first.failureReason }).toEqual({ phase: 'promoted', reason: null });
    const v1 = first.endpoint!;
    expect(v1).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/v1$/);
    expect(await modelsAt(v1)).toEqual([modelId]);
    await eventually('the gateway to serve v1', async () => (await servedVersion(modelId)) === 'v1');
    // The model process's environment, read from the kernel: the request's values, none of the worker's.
    const [pidFile] = (await readdir(stateDir)).filter((f) => f.endsWith('.pid'));
    const pid = (await readFile(path.join(stateDir, pidFile!), 'utf8')).trim();
    const environ = (await readFile(`/proc/${pid}/environ`, 'utf8')).split('\0');
    expect(environ).toContain(`LLMHUB_MODEL_URI=s3://models/${modelId}/v1`);
    expect(environ.some((e) => e.includes(MARKER))).toBe(false);
    expect(environ.some((e) => e.startsWith('DATABASE_URL=') || e.startsWith('S3_SECRET_ACCESS_KEY='))).toBe(false);

    // v2: a canary that waits at 50% shares real traffic with v1, then is promoted; v1 is scaled to 0 (stopped).
    const canaryId = await deploy(modelId, 'v2', { steps: [{ setWeight: 50 }, { pause: {} }, { setWeight: 100 }] });
    const paused = await api.untilPhase(canaryId, 'paused');
    const v2 = paused.endpoint!;
    expect(v2).not.toBe(v1);
    expect(await modelsAt(v2)).toEqual([modelId]);
    const seen = new Set<string | null>();
    await eventually('the gateway to split traffic between v1 and v2', async () => {
      seen.add(await servedVersion(modelId));
      return seen.has('v1') && seen.has('v2');
    });
    expect((await api.steer(canaryId, 'promote')).statusCode).toBe(200);
    const promoted = await api.untilPhase(canaryId, 'promoted', 'rolled_back');
    expect(promoted.phase).toBe('promoted');
    expect(await new RoutingStore(p.db).getRoute(acme.id, modelId)).toMatchObject({
      stable: 'v2',
      canary: null,
      endpoints: { v2 },
    });
    expect(await modelsAt(v1)).toBeUndefined();
    await eventually('the gateway to serve v2 only', async () => (await servedVersion(modelId)) === 'v2');

    // v3: aborted at 20%; the rollback deletes the version, which stops its process.
    const abortedId = await deploy(modelId, 'v3', { steps: [{ setWeight: 20 }, { pause: {} }] });
    const v3 = (await api.untilPhase(abortedId, 'paused')).endpoint!;
    expect(await modelsAt(v3)).toEqual([modelId]);
    expect((await api.steer(abortedId, 'abort')).statusCode).toBe(200);
    const rolledBack = await api.untilPhase(abortedId, 'rolled_back');
    expect(rolledBack.weights).toEqual({ stable: 'v2', canary: null, canaryWeight: 0 });
    expect(await modelsAt(v3)).toBeUndefined();
    expect(await modelsAt(v2)).toEqual([modelId]);
    expect(await servedVersion(modelId)).toBe('v2');
  });

  it('serves a stable version with nothing running again (a dev restart), re-applies it on redeploy, and starts a version scaled to zero on demand', async () => {
    const modelId = uniqueId('m');
    await p.registry.createModel(acme.id, { id: modelId, name: modelId, description: 'restarted' });
    const first = await api.untilPhase(await deploy(modelId, 'v1', {}), 'promoted');
    await eventually('the gateway to serve v1', async () => (await servedVersion(modelId)) === 'v1');
    // What `npm run dev` restarting leaves: the route and endpoint in the database, no process behind them.
    await stopAllProcesses(stateDir);
    expect(await modelsAt(first.endpoint!)).toBeUndefined();
    expect(await servedVersion(modelId)).toBe('v1');
    const restored = (await new RoutingStore(p.db).getRoute(acme.id, modelId))!.endpoints.v1!;
    expect(await modelsAt(restored)).toEqual([modelId]);

    // Deploying the stable version again re-applies it instead of refusing.
    const again = await api.untilPhase(await redeploy(modelId, 'v1', {}), 'promoted', 'rolled_back');
    expect({ phase: again.phase, reason: again.failureReason }).toEqual({ phase: 'promoted', reason: null });
    expect(await servedVersion(modelId)).toBe('v1');

    // The process runtime under the autoscaler: no traffic → process stopped; the next request starts it again.
    const autoscaling = {
      minReplicas: 0,
      maxReplicas: 1,
      target: { concurrency: 10 },
      scaleDownDelay: '1s',
      scaleToZeroAfter: '2s',
    };
    const scaled = await api.untilPhase(await redeploy(modelId, 'v1', {}, { autoscaling }), 'promoted');
    await eventually('the v1 process stopped after its idle time', async () => {
      const route = await new RoutingStore(p.db).getRoute(acme.id, modelId);
      return route?.serving.v1?.cold === true && (await modelsAt(scaled.endpoint!)) === undefined;
    });
    expect(await servedVersion(modelId)).toBe('v1');
  });
});
