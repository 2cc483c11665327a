// Autoscaling on the real node (deploy/dev/kube/REAL-NODE.md): the autoscaled version's replicas are containers of the
// reference model server image that really start and pass their readiness probe on real-0, and the gateway reaches
// them through their Service's ClusterIP (kube-proxy on the node), so the load the autoscaler reads is real traffic to
// real pods. The other autoscaling cases run on kwok and the process runtime (test/integration/autoscaling.test.ts).
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { defaultNamespaceOf, servingSelector } from '../../../activities/kubernetes/manifests';
import { autoscalerStatusQuery, autoscalerWorkflowId } from '../../../contracts/autoscaling';
import { testKubeConfig } from '../../../deploy/dev/kube/cluster';
import { untilReplicas } from '../../support/autoscaling';
import { untilRouted } from '../../support/gateway';
import { eventually, startTestPlatform, uniqueId, type TestPlatform, type TestTenant } from '../../support/platform';
import { realNode, useRealNodeCluster } from '../../support/real-node';
import { rolloutClient, trafficFrom } from '../../support/rollout';

let node: Awaited<ReturnType<typeof realNode>>;
let p: TestPlatform;
let acme: TestTenant;
let baseURL: string;
let api: ReturnType<typeof rolloutClient>;
const loads: (() => Promise<void>)[] = [];

beforeAll(async () => {
  node = await realNode();
  useRealNodeCluster(node);
  p = await startTestPlatform({
    gateway: { metricsFlushMs: 200, refreshMs: 500 },
    activityDeps: {
      kubeConfigOf: (cluster) => (cluster === 'real' ? testKubeConfig() : undefined),
      autoscale: { syncMs: 500, windowMs: 3_000 },
    },
  });
  baseURL = `${await p.app.listen({ host: '127.0.0.1', port: 0 })}/v1`;
  acme = await p.createTenant('acme');
  api = rolloutClient(p, acme);
}, 900_000);
afterAll(async () => {
  await Promise.all(loads.map((stop) => stop()));
  await p?.close();
});

interface PodView {
  node: string;
  ready: boolean;
}

async function podsOf(modelId: string): Promise<PodView[]> {
  const selector = Object.entries(servingSelector(acme.id, modelId, 'v1'))
    .map(([k, v]) => `${k}=${v}`)
    .join(',');
  const out = JSON.parse(
    await node.kubectl('get', 'pods', '-n', defaultNamespaceOf(acme.id), '-l', selector, '-o', 'json'),
  );
  return (
    out.items as {
      metadata: { deletionTimestamp?: string };
      spec: { nodeName?: string };
      status: { containerStatuses?: { ready: boolean }[] };
    }[]
  )
    .filter((pod) => !pod.metadata.deletionTimestamp)
    .map((pod) => ({ node: pod.spec.nodeName ?? '', ready: pod.status.containerStatuses?.[0]?.ready ?? false }));
}

describe('autoscaling on the real node', () => {
  it('load from another process raises the replicas on real pods, and they go back to the minimum after it stops', async () => {
    const id = uniqueId('m');
    await p.registry.createModel(acme.id, { id, name: id, description: 'reference model server on the real node' });
    await api.addVersion(new Map(), id, 'v1', '');
    // 6 callers in flight, each answer taking 1 s (the server's own latency, so a loaded machine's delays between a
    // caller's requests leave the load near 6), at a target of 2.5 per replica: 3 replicas for any measured load in
    // (5, 7.5], which the window's edges (a request that began before it counts whole) keep it in.
    const res = await api.deploy({
      modelId: id,
      version: 'v1',
      cluster: 'real',
      resources: { cpu: '100m', gpu: 0, memory: '256Mi' },
      env: { REFERENCE_MODEL_LATENCY_MS: '1000' },
      strategy: { steps: [{ setWeight: 100 }] },
      autoscaling: {
        minReplicas: 1,
        maxReplicas: 4,
        target: { concurrency: 2.5 },
        scaleDownDelay: '3s',
        scaleToZeroAfter: '1h',
      },
    });
    expect(res.statusCode).toBe(202);
    const rollout = await api.untilPhase(res.json().deploymentId, 'promoted', 'rolled_back');
    expect({ phase: rollout.phase, reason: rollout.failureReason }).toEqual({ phase: 'promoted', reason: null });
    await untilRouted(p.app, acme.keys.developer, id);
    const autoscaler = () =>
      p.temporal.workflow.getHandle(autoscalerWorkflowId(acme.id, id, 'v1')).query(autoscalerStatusQuery);

    const traffic = trafficFrom(baseURL, acme.keys.developer, id, 6);
    loads.push(() => traffic.stop());
    const read = async () => ({
      status: await autoscaler().catch(() => undefined),
      replicas: (await api.readDeployment(id, 'v1'))?.spec?.replicas,
    });
    // The 3 s window fills in about 6 passes of 500 ms, one step reaches 3; 60 passes without it is a failure anywhere.
    const up = await untilReplicas(read, Date.now(), 3, 60);
    expect(up.decisions.some((d) => d.reason === 'scale_up' && d.applied === 3)).toBe(true);
    await eventually('3 ready pods on real-0', async () => {
      const pods = await podsOf(id);
      return pods.length === 3 && pods.every((pod) => pod.node === 'real-0' && pod.ready);
    });
    expect(Math.max(...up.decisions.map((d) => d.applied))).toBe(3);
    await traffic.stop();
    const stopped = Date.now();
    expect(traffic.statuses.length).toBeGreaterThan(0);
    expect(traffic.statuses.filter((s) => s !== 200)).toEqual([]);

    // The load leaves the 3 s window and the 3 s delay passes in about 12 passes of 500 ms; 60 is a failure anywhere.
    const down = await untilReplicas(read, stopped, 1, 60);
    expect(down.decisions.filter((d) => d.at > stopped && d.reason === 'scale_down').length).toBeGreaterThan(0);
    await eventually('one pod left on real-0', async () => {
      const pods = await podsOf(id);
      return pods.length === 1 && pods[0]!.node === 'real-0' && pods[0]!.ready;
    });
  });
});
