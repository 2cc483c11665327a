import { describe, expect, it } from '@jest/globals';
import { ApplicationFailure } from '@temporalio/common';
import { clusterIpEndpoints, type ServedVersion } from '../../activities/kubernetes/endpoints';
import { renderModelServer } from '../../activities/kubernetes/manifests';
import { clustersOf, ConfigError } from '../../common/config';
import { servingSpec } from '../support/workloads';

const at = { namespace: 'ns', name: 'llama-v2' };
const REAL = {
  nodeSelector: { 'llmhub.dev/node-kind': 'real' },
  tolerations: [{ key: 'llmhub.dev/real-node', operator: 'Exists', effect: 'NoSchedule' }],
};

describe("a cluster's pod placement (LLMHUB_CLUSTERS nodeSelector/tolerations)", () => {
  it('is merged into the model server pods, beside the GPU toleration and product selector', () => {
    const gpu = renderModelServer(
      { ...servingSpec, resources: { cpu: '1', gpu: 1, memory: '4Gi' } },
      at,
      { image: 'x', gpuProduct: 'NVIDIA-L4' },
      [],
      [],
      REAL,
    ).deployment.spec!.template.spec!;
    expect(gpu.nodeSelector).toEqual({ 'nvidia.com/gpu.product': 'NVIDIA-L4', 'llmhub.dev/node-kind': 'real' });
    expect(gpu.tolerations).toEqual([
      { key: 'nvidia.com/gpu', operator: 'Exists', effect: 'NoSchedule' },
      ...REAL.tolerations,
    ]);
  });

  it('adds nothing to the pod spec when the cluster has none', () => {
    const spec = renderModelServer({ ...servingSpec, resources: { cpu: '1', gpu: 0, memory: '4Gi' } }, at, {
      image: 'x',
    }).deployment.spec!.template.spec!;
    expect(spec).not.toHaveProperty('nodeSelector');
    expect(spec).not.toHaveProperty('tolerations');
  });

  it('is checked when the configuration is read', () => {
    expect(clustersOf(JSON.stringify({ real: { ...REAL, serviceAddress: 'clusterIP' } })).real).toMatchObject(REAL);
    expect(() => clustersOf('{"real":{"tolerations":[{"key":"a","operator":"Sometimes"}]}}')).toThrow(ConfigError);
    expect(() => clustersOf('{"real":{"serviceAddress":"nodePort"}}')).toThrow(ConfigError);
  });
});

describe('clusterIpEndpoints', () => {
  const v: ServedVersion = {
    cluster: 'real',
    tenantId: 't',
    modelId: 'm',
    version: 'v1',
    namespace: 'llmhub-t',
    service: 'm-v1',
    port: 8000,
  };
  it("is the Service's ClusterIP and port", () => {
    expect(clusterIpEndpoints({ ...v, clusterIP: '10.128.16.7' })).toBe('http://10.128.16.7:8000/v1');
  });
  it('refuses a Service without one (headless, or not allocated)', () => {
    expect(() => clusterIpEndpoints(v)).toThrow(ApplicationFailure);
    expect(() => clusterIpEndpoints({ ...v, clusterIP: 'None' })).toThrow(/has no ClusterIP/);
  });
});
