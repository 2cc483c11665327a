// Rollouts on the real node (deploy/dev/kube/REAL-NODE.md): the model versions are containers of the reference model
// server image that really start, probe, crash and stop; the gateway reaches them through their Services' ClusterIPs
// (kube-proxy on the node), with no local endpoint mapping, and the servers' own request logs (kubectl logs) show the
// traffic reached the pods.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { defaultNamespaceOf, servingName, servingSelector } from '../../../activities/kubernetes/manifests';
import { RoutingStore } from '../../../common/store/routing';
import { testKubeConfig } from '../../../deploy/dev/kube/cluster';
import { untilRouted } from '../../support/gateway';
import { eventually, startTestPlatform, uniqueId, type TestPlatform, type TestTenant } from '../../support/platform';
import { realNode, useRealNodeCluster } from '../../support/real-node';
import { rolloutClient, trafficFrom } from '../../support/rollout';

let node: Awaited<ReturnType<typeof realNode>>;
let p: TestPlatform;
let acme: TestTenant;
let baseURL: string;
let api: ReturnType<typeof rolloutClient>;
let routing: RoutingStore;
const loads: (() => Promise<void>)[] = [];

beforeAll(async () => {
  node = await realNode();
  useRealNodeCluster(node);
  p = await startTestPlatform({
    gateway: { metricsFlushMs: 200, refreshMs: 500 },
    activityDeps: { kubeConfigOf: (cluster) => (cluster === 'real' ? testKubeConfig() : undefined) },
  });
  baseURL = `${await p.app.listen({ host: '127.0.0.1', port: 0 })}/v1`;
  acme = await p.createTenant('acme');
  api = rolloutClient(p, acme);
  routing = new RoutingStore(p.db);
}, 900_000);
afterAll(async () => {
  await Promise.all(loads.map((stop) => stop()));
  await p?.close();
});

/** Every version logs its requests (the server's --log-requests, from the deploy request's env). */
const LOGGED = { REFERENCE_MODEL_LOG_REQUESTS: '1' };
const FAST = { interval: '2s', minRequests: 3, minSuccessRate: 0.9, failureLimit: 2, inconclusiveLimit: 20 };

const deployOnNode = (modelId: string, version: string, strategy: object, env: Record<string, string> = {}) =>
  api.deploy({
    modelId,
    version,
    cluster: 'real',
    resources: { cpu: '100m', gpu: 0, memory: '256Mi' },
    env: { ...LOGGED, ...env },
    strategy,
  });

async function registerVersion(modelId: string, version: string) {
  await api.addVersion(new Map(), modelId, version, '');
}

/** A model whose v1 runs on the real node as the stable version, with a ready v2 to roll out; traffic flowing. */
async function servedModel() {
  const id = uniqueId('m');
  await p.registry.createModel(acme.id, { id, name: id, description: 'reference model server on the real node' });
  await registerVersion(id, 'v1');
  await registerVersion(id, 'v2');
  const first = await deployOnNode(id, 'v1', { steps: [{ setWeight: 100 }] });
  expect(first.statusCode).toBe(202);
  const v1 = await api.untilPhase(first.json().deploymentId, 'promoted', 'rolled_back');
  expect({ phase: v1.phase, reason: v1.failureReason }).toEqual({ phase: 'promoted', reason: null });
  await untilRouted(p.app, acme.keys.developer, id);
  const traffic = trafficFrom(baseURL, acme.keys.developer, id);
  loads.push(() => traffic.stop());
  await eventually('the traffic to reach the v1 pod', async () => (await requestsLogged(id, 'v1')) > 0);
  return { id, traffic };
}

const namespace = () => defaultNamespaceOf(acme.id);
const selector = (modelId: string, version: string) =>
  Object.entries(servingSelector(acme.id, modelId, version))
    .map(([k, v]) => `${k}=${v}`)
    .join(',');

/** The request lines the version's model server wrote to its stdout, read with `kubectl logs`. */
async function requestsLogged(modelId: string, version: string): Promise<number> {
  const out = await node.kubectl(
    'logs',
    '-n',
    namespace(),
    '-l',
    selector(modelId, version),
    '--tail=-1',
    '--all-containers',
  );
  return out.split('\n').filter((l) => l.includes('"msg":"request"') && l.includes(`"model":"${modelId}"`)).length;
}

interface PodView {
  node: string;
  ready: boolean;
  restarts: number;
  waiting: string | undefined;
}

async function podsOf(modelId: string, version: string): Promise<PodView[]> {
  const out = JSON.parse(
    await node.kubectl('get', 'pods', '-n', namespace(), '-l', selector(modelId, version), '-o', 'json'),
  );
  return (out.items as { spec: { nodeName?: string }; status: { containerStatuses?: ContainerStatus[] } }[]).map(
    (pod) => {
      const c = pod.status.containerStatuses?.[0];
      return {
        node: pod.spec.nodeName ?? '',
        ready: c?.ready ?? false,
        restarts: c?.restartCount ?? 0,
        waiting: c?.state?.waiting?.reason,
      };
    },
  );
}
interface ContainerStatus {
  ready: boolean;
  restartCount: number;
  state?: { waiting?: { reason?: string } };
}

/** What the kubelet reported about the version's pods (events outlive the pods a rollback deletes). */
async function eventReasons(modelId: string, version: string): Promise<string[]> {
  const out = JSON.parse(await node.kubectl('get', 'events', '-n', namespace(), '-o', 'json'));
  const name = servingName(modelId, version);
  return (out.items as { involvedObject: { name: string }; reason: string; message: string }[])
    .filter((e) => e.involvedObject.name.startsWith(`${name}-`))
    .map((e) => `${e.reason}: ${e.message}`);
}

describe('rollouts on the real node', () => {
  it('promotes a healthy canary while a separate process sends traffic through the gateway: no non-200', async () => {
    const m = await servedModel();
    const res = await deployOnNode(m.id, 'v2', {
      steps: [50, 100].flatMap((w) => [{ setWeight: w }, { pause: { duration: '2s' } }, { analysis: {} }]),
      analysis: FAST,
    });
    expect(res.statusCode).toBe(202);
    const done = await api.untilPhase(res.json().deploymentId, 'promoted', 'rolled_back');
    expect({ phase: done.phase, reason: done.failureReason }).toEqual({ phase: 'promoted', reason: null });
    // The new stable keeps serving real traffic after the promotion, then the load stops.
    const atPromotion = await requestsLogged(m.id, 'v2');
    await eventually('v2 to serve after its promotion', async () => (await requestsLogged(m.id, 'v2')) > atPromotion);
    await m.traffic.stop();

    expect(m.traffic.statuses.length).toBeGreaterThan(0);
    expect(m.traffic.statuses.filter((s) => s !== 200)).toEqual([]);
    // The route names the Service's ClusterIP (no local endpoint mapping).
    const service = await api.readService(m.id, 'v2');
    expect(await routing.getRoute(acme.id, m.id)).toMatchObject({
      stable: 'v2',
      canary: null,
      endpoints: { v2: `http://${service?.spec?.clusterIP}:8000/v1` },
    });
    expect(await podsOf(m.id, 'v2')).toEqual([{ node: 'real-0', ready: true, restarts: 0, waiting: undefined }]);
  });

  it('rolls back a canary whose readiness probe fails, the stable version serving throughout', async () => {
    const m = await servedModel();
    const res = await deployOnNode(
      m.id,
      'v2',
      { steps: [{ setWeight: 50 }], readinessTimeout: '25s' },
      {
        REFERENCE_MODEL_NOT_READY: '1',
      },
    );
    const { deploymentId } = res.json();
    // The container runs; the kubelet's readiness probe (GET /v1/models) is what keeps it out.
    await eventually('the canary container to run, not ready', async () =>
      (await podsOf(m.id, 'v2')).some((pod) => pod.node === 'real-0' && !pod.ready && pod.waiting === undefined),
    );
    const done = await api.untilPhase(deploymentId, 'rolled_back', 'promoted');
    expect(done.failureReason).toMatch(/was not ready within 25 s \(0\/1 replicas ready\)/);
    expect(await eventReasons(m.id, 'v2')).toContainEqual(
      expect.stringMatching(/^Unhealthy: Readiness probe failed: HTTP probe failed with statuscode: 503/),
    );
    await eventually(
      'the canary Deployment to be gone',
      async () => (await api.readDeployment(m.id, 'v2')) === undefined,
    );
    expect(await routing.getRoute(acme.id, m.id)).toMatchObject({ stable: 'v1', canary: null });
    const before = await requestsLogged(m.id, 'v1');
    await eventually('v1 to keep serving', async () => (await requestsLogged(m.id, 'v1')) > before);
    await m.traffic.stop();
    expect(m.traffic.statuses.length).toBeGreaterThan(0);
    expect(m.traffic.statuses.filter((s) => s !== 200)).toEqual([]);
    expect(await requestsLogged(m.id, 'v2')).toBe(0);
  });

  it('rolls back a canary that crash-loops, the stable version serving throughout', async () => {
    const m = await servedModel();
    const res = await deployOnNode(
      m.id,
      'v2',
      { steps: [{ setWeight: 50 }], readinessTimeout: '40s' },
      {
        REFERENCE_MODEL_EXIT_AFTER_MS: '0',
      },
    );
    const { deploymentId } = res.json();
    await eventually('the canary to crash-loop', async () =>
      (await podsOf(m.id, 'v2')).some((pod) => pod.restarts >= 1 && pod.waiting === 'CrashLoopBackOff'),
    );
    const done = await api.untilPhase(deploymentId, 'rolled_back', 'promoted');
    expect(done.failureReason).toMatch(/was not ready within 40 s \(0\/1 replicas ready\)/);
    expect(await eventReasons(m.id, 'v2')).toContainEqual(
      expect.stringMatching(/^BackOff: Back-off restarting failed container/),
    );
    await eventually(
      'the canary Deployment to be gone',
      async () => (await api.readDeployment(m.id, 'v2')) === undefined,
    );
    expect(await routing.getRoute(acme.id, m.id)).toMatchObject({ stable: 'v1', canary: null });
    const before = await requestsLogged(m.id, 'v1');
    await eventually('v1 to keep serving', async () => (await requestsLogged(m.id, 'v1')) > before);
    await m.traffic.stop();
    expect(m.traffic.statuses.length).toBeGreaterThan(0);
    expect(m.traffic.statuses.filter((s) => s !== 200)).toEqual([]);
  });
});
