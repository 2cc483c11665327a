import { describe, expect, it } from '@jest/globals';
import { clustersOf, ConfigError } from '../../common/config';
import { PLATFORM_DEFAULT_RESOURCES, resolveResources } from '../../common/resources';

describe('deploy resources', () => {
  const model = { cpu: '8', gpu: 2, memory: '64Gi' };

  it("takes the body's, else the model's, else the cluster's default over the platform's", () => {
    expect(resolveResources({ cpu: 0.5, gpu: 0 }, model, { cpu: '2' })).toEqual({ cpu: '0.5', gpu: 0, memory: '16Gi' });
    expect(resolveResources(undefined, model, { cpu: '2' })).toEqual(model);
    expect(resolveResources(undefined, null, { cpu: '2', gpu: 1 })).toEqual({ cpu: '2', gpu: 1, memory: '4Gi' });
    expect(resolveResources(undefined, null, undefined)).toEqual(PLATFORM_DEFAULT_RESOURCES);
  });

  it("reads a cluster's defaultResources from LLMHUB_CLUSTERS and refuses bad ones", () => {
    expect(clustersOf('{"gpu":{"defaultResources":{"gpu":1,"memory":"32Gi"}}}').gpu?.defaultResources).toEqual({
      gpu: 1,
      memory: '32Gi',
    });
    for (const bad of [{ cpu: '0' }, { gpu: 17 }, { memory: '4GB' }, { disk: '1Ti' }])
      expect(() => clustersOf(JSON.stringify({ c: { defaultResources: bad } }))).toThrow(ConfigError);
  });
});
