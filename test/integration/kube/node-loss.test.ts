import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { V1MicroTime, type V1Deployment, type V1Job, type V1Node, type V1Pod } from '@kubernetes/client-node';
import {
  BEHAVIOUR,
  IMAGE,
  createNamespace,
  deleteNamespace,
  isNotFound,
  isPodReady,
  kube,
  listPods,
  uniqueName,
  waitFor,
  type Kube,
} from './kube-helpers';

// Each test brings its own kwok nodes in a private pool (label + taint), so losing them never
// disturbs pods of other tests (or of the other test here) running against the same cluster.
const POOL_LABEL = 'llmhub.dev/test-pool';

describe('node loss', () => {
  let k: Kube;
  let ns: string;
  const nodes: string[] = [];

  beforeAll(async () => {
    k = kube();
    ns = await createNamespace(k, 'kube-nodeloss');
  }, 120_000);

  afterAll(async () => {
    if (!k) return;
    for (const name of nodes) {
      try {
        await k.core.deleteNode({ name });
      } catch (err) {
        if (!isNotFound(err)) throw err;
      }
    }
    if (ns) await deleteNamespace(k, ns);
  });

  async function createNode(pool: string): Promise<string> {
    const name = uniqueName(pool);
    const node: V1Node = {
      metadata: {
        name,
        annotations: { 'kwok.x-k8s.io/node': 'fake' },
        labels: { type: 'kwok', 'kubernetes.io/hostname': name, [POOL_LABEL]: pool },
      },
      spec: { taints: [{ key: POOL_LABEL, value: pool, effect: 'NoSchedule' }] },
      status: {
        capacity: { cpu: '8', memory: '32Gi', pods: '110' },
        allocatable: { cpu: '8', memory: '32Gi', pods: '110' },
      },
    };
    await k.core.createNode({ body: node });
    nodes.push(name);
    await waitFor(`node ${name} Ready`, async () => {
      const n = await k.core.readNode({ name });
      return n.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True');
    });
    return name;
  }

  const poolScheduling = (pool: string) => ({
    nodeSelector: { [POOL_LABEL]: pool },
    tolerations: [{ key: POOL_LABEL, operator: 'Equal', value: pool, effect: 'NoSchedule' }],
  });

  function deployment(name: string, pool: string): V1Deployment {
    return {
      metadata: { name, namespace: ns },
      spec: {
        replicas: 2,
        selector: { matchLabels: { app: name } },
        template: {
          metadata: { labels: { app: name } },
          spec: { ...poolScheduling(pool), containers: [{ name: 'c', image: IMAGE }] },
        },
      },
    };
  }

  function runForeverJob(name: string, pool: string): V1Job {
    return {
      metadata: { name, namespace: ns },
      spec: {
        backoffLimit: 3,
        template: {
          metadata: { labels: { job: name }, annotations: { [BEHAVIOUR]: 'run-forever' } },
          spec: { ...poolScheduling(pool), restartPolicy: 'Never', containers: [{ name: 'c', image: IMAGE }] },
        },
      },
    };
  }

  const readyPodsOn = (pods: V1Pod[], node: string): V1Pod[] =>
    pods.filter((p) => p.spec?.nodeName === node && isPodReady(p) && !p.metadata?.deletionTimestamp);

  test('deleting a node removes its pods and controllers re-create them on another node', async () => {
    const pool = uniqueName('pool-delete');
    const doomed = await createNode(pool);
    await k.apps.createNamespacedDeployment({ namespace: ns, body: deployment('svc', pool) });
    await k.batch.createNamespacedJob({ namespace: ns, body: runForeverJob('worker', pool) });
    await waitFor('svc and worker pods Ready on the doomed node', async () => {
      const pods = await listPods(k, ns);
      return readyPodsOn(pods, doomed).length === 3;
    });
    const before = new Set((await listPods(k, ns)).map((p) => p.metadata?.uid));

    const spare = await createNode(pool);
    await k.core.deleteNode({ name: doomed });

    // The pod GC controller deletes pods bound to a node that no longer exists; the
    // ReplicaSet and Job controllers replace them and the scheduler picks the spare node.
    await waitFor(
      'replacement pods Ready on the spare node',
      async () => {
        const pods = await listPods(k, ns);
        const onDoomed = pods.filter((p) => p.spec?.nodeName === doomed);
        const svc = readyPodsOn(pods, spare).filter((p) => p.metadata?.labels?.app === 'svc');
        const worker = readyPodsOn(pods, spare).filter((p) => p.metadata?.labels?.job === 'worker');
        return onDoomed.length === 0 && svc.length === 2 && worker.length === 1;
      },
      { timeoutMs: 240_000 },
    );
    const after = await listPods(k, ns);
    for (const p of after.filter((p) => !p.metadata?.deletionTimestamp && p.status?.phase === 'Running')) {
      expect(before.has(p.metadata?.uid)).toBe(false);
      expect(p.spec?.nodeName).toBe(spare);
    }
  }, 360_000);

  test('a node that stops heartbeating gets tainted and its pods are evicted after the short toleration', async () => {
    const pool = uniqueName('pool-lost');
    const lost = await createNode(pool);
    await k.apps.createNamespacedDeployment({ namespace: ns, body: deployment('evict', pool) });
    const original = await waitFor('evict pods Ready on the node to be lost', async () => {
      const pods = (await listPods(k, ns, 'app=evict')).filter((p) => p.spec?.nodeName === lost && isPodReady(p));
      return pods.length === 2 ? pods : undefined;
    });
    // The apiserver's DefaultTolerationSeconds plugin set the (shortened) toleration.
    const tol = original[0]?.spec?.tolerations?.find((t) => t.key === 'node.kubernetes.io/unreachable');
    expect(tol?.tolerationSeconds).toBe(10);

    const spare = await createNode(pool);
    // Simulate a dead kubelet: hand the node's Lease to another holder. kwok then stops renewing
    // it and treats the node (and its pods) as someone else's, so the lease simply ages out.
    await waitFor('node lease taken over', async () => {
      const lease = await k.coordination.readNamespacedLease({ name: lost, namespace: 'kube-node-lease' });
      lease.spec = {
        ...lease.spec,
        holderIdentity: 'llmhub-test-dead-kubelet',
        leaseDurationSeconds: 3600,
        renewTime: new V1MicroTime(),
      };
      await k.coordination.replaceNamespacedLease({ name: lost, namespace: 'kube-node-lease', body: lease });
      return true;
    });

    await waitFor(
      'node tainted unreachable',
      async () => {
        const n = await k.core.readNode({ name: lost });
        return n.spec?.taints?.some((t) => t.key === 'node.kubernetes.io/unreachable' && t.effect === 'NoExecute');
      },
      { timeoutMs: 240_000 },
    );
    await waitFor(
      'original pods evicted and replacements Ready on the spare node',
      async () => {
        const pods = await listPods(k, ns, 'app=evict');
        const originalsEvicted = original.every((o) => {
          const now = pods.find((p) => p.metadata?.uid === o.metadata?.uid);
          // No kubelet confirms the deletion on a lost node, so evicted pods stay Terminating.
          return now === undefined || now.metadata?.deletionTimestamp !== undefined;
        });
        return originalsEvicted && readyPodsOn(pods, spare).length === 2;
      },
      { timeoutMs: 240_000 },
    );
  }, 600_000);
});
