import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { PatchStrategy, type V1Deployment } from '@kubernetes/client-node';
import {
  FIELD_MANAGER,
  IMAGE,
  createNamespace,
  deleteNamespace,
  isNotFound,
  isPodReady,
  kube,
  listPods,
  waitFor,
  type Kube,
} from './kube-helpers';

describe('Deployments on kwok nodes', () => {
  let k: Kube;
  let ns: string;

  beforeAll(async () => {
    k = kube();
    ns = await createNamespace(k, 'kube-deploy');
  }, 120_000);

  afterAll(async () => {
    if (k && ns) await deleteNamespace(k, ns);
  });

  function deployment(replicas: number): V1Deployment {
    return {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name: 'web', namespace: ns, labels: { app: 'web' } },
      spec: {
        replicas,
        selector: { matchLabels: { app: 'web' } },
        template: {
          metadata: { labels: { app: 'web' } },
          spec: {
            containers: [{ name: 'web', image: IMAGE, resources: { requests: { cpu: '100m', memory: '64Mi' } } }],
          },
        },
      },
    };
  }

  const apply = (d: V1Deployment): Promise<V1Deployment> =>
    k.objects.patch(d, undefined, undefined, FIELD_MANAGER, true, PatchStrategy.ServerSideApply);

  const read = (): Promise<V1Deployment> => k.apps.readNamespacedDeployment({ name: 'web', namespace: ns });

  /** Rolled out and settled: the controller has nothing left to write to status. */
  const settled = (d: V1Deployment, replicas: number): boolean =>
    d.status?.observedGeneration === d.metadata?.generation &&
    (d.status?.replicas ?? 0) === replicas &&
    (d.status?.availableReplicas ?? 0) === replicas &&
    (d.status?.updatedReplicas ?? 0) === replicas &&
    d.status?.conditions?.some((c) => c.type === 'Progressing' && c.reason === 'NewReplicaSetAvailable') === true;

  test('2 replicas become available, apply is idempotent, scale to 0 and delete', async () => {
    const created = await apply(deployment(2));
    expect(created.metadata?.generation).toBe(1);
    expect(created.metadata?.managedFields?.some((f) => f.manager === FIELD_MANAGER && f.operation === 'Apply')).toBe(
      true,
    );

    const available = await waitFor('deployment web available with 2 replicas', async () => {
      const d = await read();
      return settled(d, 2) ? d : undefined;
    });
    const pods = await listPods(k, ns, 'app=web');
    expect(pods).toHaveLength(2);
    for (const pod of pods) {
      expect(isPodReady(pod)).toBe(true);
      expect(pod.status?.phase).toBe('Running');
      // Plain workloads stay off the tainted GPU nodes.
      expect(pod.spec?.nodeName).toMatch(/^cpu-/);
    }

    // Re-applying an unchanged manifest must not write: same generation and resourceVersion.
    // A stray status write between two applies is retried; an apply that always wrote would
    // never produce two equal resourceVersions and fails the wait.
    const [a, b] = await waitFor('two consecutive no-op applies', async () => {
      const first = await apply(deployment(2));
      const second = await apply(deployment(2));
      return first.metadata?.resourceVersion === second.metadata?.resourceVersion ? [first, second] : undefined;
    });
    expect(a.metadata?.generation).toBe(available.metadata?.generation);
    expect(b.metadata?.generation).toBe(available.metadata?.generation);
    expect(b.metadata?.managedFields).toEqual(a.metadata?.managedFields);
    const current = await read();
    expect(current.metadata?.generation).toBe(available.metadata?.generation);

    const scaled = await apply(deployment(0));
    expect(scaled.metadata?.generation).toBe((available.metadata?.generation ?? 0) + 1);
    await waitFor('deployment scaled to 0', async () => {
      const d = await read();
      return d.status?.observedGeneration === d.metadata?.generation && (d.status?.replicas ?? 0) === 0;
    });
    await waitFor('web pods gone', async () => (await listPods(k, ns, 'app=web')).length === 0);

    await k.apps.deleteNamespacedDeployment({ name: 'web', namespace: ns, propagationPolicy: 'Foreground' });
    await waitFor('deployment deleted', async () => {
      try {
        await read();
        return false;
      } catch (err) {
        if (isNotFound(err)) return true;
        throw err;
      }
    });
    const rs = await k.apps.listNamespacedReplicaSet({ namespace: ns });
    expect(rs.items).toHaveLength(0);
  }, 300_000);
});
