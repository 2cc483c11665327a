import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import type { V1Job, V1Pod } from '@kubernetes/client-node';
import {
  BEHAVIOUR,
  IMAGE,
  createNamespace,
  deleteNamespace,
  isPodReady,
  kube,
  listPods,
  readPod,
  waitFor,
  type Kube,
} from './kube-helpers';

// The annotation-driven pod behaviours of deploy/dev/kube/kwok-stages.yaml. A "stays so"
// claim is checked against a control object created later that already went further, never
// against a sleep.
describe('kwok pod behaviours', () => {
  let k: Kube;
  let ns: string;

  beforeAll(async () => {
    k = kube();
    ns = await createNamespace(k, 'kube-behaviour');
  }, 120_000);

  afterAll(async () => {
    if (k && ns) await deleteNamespace(k, ns);
  });

  function pod(name: string, behaviour?: string, restartPolicy = 'Always'): V1Pod {
    return {
      metadata: { name, namespace: ns, annotations: behaviour ? { [BEHAVIOUR]: behaviour } : {} },
      spec: { restartPolicy, containers: [{ name: 'c', image: IMAGE }] },
    };
  }

  function job(name: string, behaviour?: string): V1Job {
    return {
      metadata: { name, namespace: ns },
      spec: {
        backoffLimit: 0,
        template: {
          metadata: { labels: { job: name }, annotations: behaviour ? { [BEHAVIOUR]: behaviour } : {} },
          spec: { restartPolicy: 'Never', containers: [{ name: 'c', image: IMAGE }] },
        },
      },
    };
  }

  test('a never-ready pod runs but stays unready while a later control pod becomes Ready', async () => {
    await k.core.createNamespacedPod({ namespace: ns, body: pod('never-ready', 'never-ready') });
    const running = await waitFor('never-ready pod Running', async () => {
      const p = await readPod(k, ns, 'never-ready');
      return p.status?.phase === 'Running' ? p : undefined;
    });
    expect(isPodReady(running)).toBe(false);
    expect(running.status?.containerStatuses?.[0]?.state?.running).toBeDefined();

    await k.core.createNamespacedPod({ namespace: ns, body: pod('control') });
    await waitFor('control pod Ready', async () => isPodReady(await readPod(k, ns, 'control')));

    // Several reads after the control pod (created later) became Ready: still not Ready.
    for (let i = 0; i < 5; i++) {
      const p = await readPod(k, ns, 'never-ready');
      expect(p.status?.phase).toBe('Running');
      expect(isPodReady(p)).toBe(false);
      expect(p.status?.conditions?.find((c) => c.type === 'Ready')?.reason).toBe('ContainersNotReady');
      expect(isPodReady(await readPod(k, ns, 'control'))).toBe(true);
    }
  }, 180_000);

  test('a fail pod reaches phase Failed with a non-zero exit code', async () => {
    await k.core.createNamespacedPod({ namespace: ns, body: pod('failing', 'fail', 'Never') });
    const failed = await waitFor('failing pod Failed', async () => {
      const p = await readPod(k, ns, 'failing');
      return p.status?.phase === 'Failed' ? p : undefined;
    });
    expect(failed.status?.containerStatuses?.[0]?.state?.terminated?.exitCode).toBe(1);
    expect(isPodReady(failed)).toBe(false);
  }, 180_000);

  test('a failing job pod fails its Job', async () => {
    await k.batch.createNamespacedJob({ namespace: ns, body: job('fails', 'fail') });
    await waitFor('job fails Failed', async () => {
      const j = await k.batch.readNamespacedJob({ name: 'fails', namespace: ns });
      return j.status?.conditions?.some((c) => c.type === 'Failed' && c.status === 'True');
    });
  }, 180_000);

  test('a run-forever job pod keeps running while a later plain job completes', async () => {
    await k.batch.createNamespacedJob({ namespace: ns, body: job('forever', 'run-forever') });
    await waitFor('forever pod Ready', async () => {
      const pods = await listPods(k, ns, 'job=forever');
      return pods.length === 1 && pods[0] !== undefined && isPodReady(pods[0]);
    });

    await k.batch.createNamespacedJob({ namespace: ns, body: job('plain') });
    await waitFor('plain job Complete', async () => {
      const j = await k.batch.readNamespacedJob({ name: 'plain', namespace: ns });
      return j.status?.conditions?.some((c) => c.type === 'Complete' && c.status === 'True');
    });

    const forever = await listPods(k, ns, 'job=forever');
    expect(forever).toHaveLength(1);
    expect(forever[0]?.status?.phase).toBe('Running');
    expect(forever[0] && isPodReady(forever[0])).toBe(true);
    const j = await k.batch.readNamespacedJob({ name: 'forever', namespace: ns });
    expect(j.status?.active).toBe(1);
    expect(j.status?.succeeded ?? 0).toBe(0);
  }, 180_000);
});
