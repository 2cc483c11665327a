import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import type { V1Job, V1Pod } from '@kubernetes/client-node';
import {
  GPU_TOLERATION,
  IMAGE,
  createNamespace,
  deleteNamespace,
  kube,
  listPods,
  waitFor,
  type Kube,
} from './kube-helpers';

const A100 = 'NVIDIA-A100-SXM4-80GB';
const L4 = 'NVIDIA-L4';

describe('GPU scheduling onto kwok GPU nodes', () => {
  let k: Kube;
  let ns: string;

  beforeAll(async () => {
    k = kube();
    ns = await createNamespace(k, 'kube-gpu');
  }, 120_000);

  afterAll(async () => {
    if (k && ns) await deleteNamespace(k, ns);
  });

  function gpuJob(name: string, resources: Record<string, string>, nodeSelector?: Record<string, string>): V1Job {
    return {
      apiVersion: 'batch/v1',
      kind: 'Job',
      metadata: { name, namespace: ns },
      spec: {
        backoffLimit: 0,
        template: {
          metadata: { labels: { job: name } },
          spec: {
            restartPolicy: 'Never',
            nodeSelector,
            tolerations: [GPU_TOLERATION],
            containers: [{ name: 'train', image: IMAGE, resources: { requests: resources, limits: resources } }],
          },
        },
      },
    };
  }

  async function onePod(job: string): Promise<V1Pod> {
    return waitFor(`a pod of job ${job}`, async () => (await listPods(k, ns, `job=${job}`))[0]);
  }

  async function waitJobComplete(name: string): Promise<void> {
    await waitFor(`job ${name} complete`, async () => {
      const job = await k.batch.readNamespacedJob({ name, namespace: ns });
      const failed = job.status?.conditions?.find((c) => c.type === 'Failed' && c.status === 'True');
      if (failed) throw new Error(`job ${name} failed: ${failed.message}`);
      return job.status?.conditions?.some((c) => c.type === 'Complete' && c.status === 'True');
    });
  }

  test('a 2-GPU job with a product selector runs on a node of that product and completes', async () => {
    await k.batch.createNamespacedJob({
      namespace: ns,
      body: gpuJob('a100-train', { 'nvidia.com/gpu': '2' }, { 'nvidia.com/gpu.product': A100 }),
    });
    await waitJobComplete('a100-train');
    const pod = await onePod('a100-train');
    expect(pod.status?.phase).toBe('Succeeded');
    // gpu-a100-mig-0 has the same product label but no whole GPUs.
    expect(pod.spec?.nodeName).toBe('gpu-a100-0');
    const node = await k.core.readNode({ name: pod.spec?.nodeName ?? '' });
    expect(node.metadata?.labels?.['nvidia.com/gpu.product']).toBe(A100);

    await k.batch.createNamespacedJob({
      namespace: ns,
      body: gpuJob('l4-serve', { 'nvidia.com/gpu': '1' }, { 'nvidia.com/gpu.product': L4 }),
    });
    await waitJobComplete('l4-serve');
    expect((await onePod('l4-serve')).spec?.nodeName).toBe('gpu-l4-0');
  }, 240_000);

  test('a job asking for more GPUs than any node has stays Pending with the scheduler reason', async () => {
    await k.batch.createNamespacedJob({ namespace: ns, body: gpuJob('too-big', { 'nvidia.com/gpu': '16' }) });
    const cond = await waitFor('PodScheduled=False on too-big', async () => {
      const pod = await onePod('too-big');
      return pod.status?.conditions?.find((c) => c.type === 'PodScheduled' && c.status === 'False');
    });
    expect(cond.reason).toBe('Unschedulable');
    expect(cond.message).toMatch(/Insufficient nvidia\.com\/gpu/);
    const pod = await onePod('too-big');
    expect(pod.status?.phase).toBe('Pending');
    expect(pod.spec?.nodeName).toBeUndefined();
  }, 240_000);

  test('a MIG slice request lands on the MIG node', async () => {
    await k.batch.createNamespacedJob({
      namespace: ns,
      body: gpuJob('mig-infer', { 'nvidia.com/mig-1g.10gb': '1' }),
    });
    await waitJobComplete('mig-infer');
    const pod = await onePod('mig-infer');
    expect(pod.spec?.nodeName).toBe('gpu-a100-mig-0');
    expect(pod.status?.phase).toBe('Succeeded');
  }, 240_000);

  test('without the GPU toleration a GPU request cannot be scheduled', async () => {
    const job = gpuJob('no-toleration', { 'nvidia.com/gpu': '1' });
    job.spec!.template.spec!.tolerations = [];
    await k.batch.createNamespacedJob({ namespace: ns, body: job });
    const cond = await waitFor('PodScheduled=False on no-toleration', async () => {
      const pod = await onePod('no-toleration');
      return pod.status?.conditions?.find((c) => c.type === 'PodScheduled' && c.status === 'False');
    });
    expect(cond.reason).toBe('Unschedulable');
    // The GPU nodes reject it for the taint (and the real node, when it runs, for its own); the CPU nodes for having
    // no GPUs.
    const tainted = (await k.core.listNode()).items.filter((n) =>
      n.spec?.taints?.some((t) => t.effect === 'NoSchedule'),
    ).length;
    expect(tainted).toBeGreaterThanOrEqual(3);
    expect(cond.message).toMatch(new RegExp(`${tainted} node\\(s\\) had untolerated taint`));
    expect(cond.message).toMatch(/2 Insufficient nvidia\.com\/gpu/);
  }, 240_000);
});
