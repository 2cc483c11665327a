import { afterAll, describe, expect, test } from '@jest/globals';
import { serviceDnsEndpoints } from '../../../activities/kubernetes/endpoints';
import { createKubernetesActivities } from '../../../activities/kubernetes';
import {
  dnsLabel,
  defaultNamespaceOf,
  renderModelServer,
  type ModelServerSpec,
} from '../../../activities/kubernetes/manifests';
import { serverSideApply } from '../../../activities/kubernetes/client';
import { testKubeConfig } from '../../../deploy/dev/kube/cluster';
import { deleteNamespace, IMAGE, kube, tenantNamespaceDeps, uniqueName } from './kube-helpers';

/** Serving objects of a tenant's model versions, through the real activities and the local API server. */
describe('serving names', () => {
  const k = kube();
  const tenantId = uniqueName('names');
  const namespace = defaultNamespaceOf(tenantId);
  const acts = createKubernetesActivities({
    kubeConfigOf: () => testKubeConfig(),
    modelRuntimeOf: () => undefined,
    namespaceOf: defaultNamespaceOf,
    ...tenantNamespaceDeps(),
    modelServer: { image: IMAGE },
    tenantS3Credentials: () => undefined,
    podMetadataKeys: [],
    endpointOf: serviceDnsEndpoints,
    podPlacementOf: () => ({}),
  });
  const spec = (modelId: string, version: string): ModelServerSpec => ({
    cluster: 'local',
    tenantId,
    modelId,
    version,
    workflowId: `rollout/${tenantId}/${modelId}-${version}`,
    artifactUri: `s3://models/${modelId}/${version}`,
    resources: { cpu: '100m', gpu: 0, memory: '64Mi' },
    env: {},
    podAnnotations: {},
    podLabels: {},
  });
  const deployments = async () =>
    (await k.apps.listNamespacedDeployment({ namespace })).items.map((d) => d.metadata!.name!).sort();

  afterAll(async () => {
    await deleteNamespace(k, namespace);
  });

  test('model a version b-c and model a-b version c get objects of their own; removing one leaves the other', async () => {
    const one = await acts.applyModelVersion(spec('a', 'b-c'));
    const two = await acts.applyModelVersion(spec('a-b', 'c'));
    expect(one.name).not.toBe(two.name);
    expect(await deployments()).toEqual([one.name, two.name].sort());
    expect(await acts.servedRefOf('local', tenantId, 'a', 'b-c')).toEqual({
      cluster: 'local',
      namespace,
      name: one.name,
    });

    await acts.deleteModelVersion(await acts.servedRefOf('local', tenantId, 'a', 'b-c'));
    expect(await deployments()).toEqual([two.name]);
    expect((await k.core.readNamespacedService({ name: two.name, namespace })).metadata?.name).toBe(two.name);
  });

  test('a version applied under the older name is found by its labels, steered there and never applied twice', async () => {
    // What an earlier release applied: the same objects under the name it derived from the pair alone.
    const legacy = dnsLabel('legacy-v1');
    const { deployment } = renderModelServer(spec('legacy', 'v1'), { namespace, name: legacy }, { image: IMAGE });
    await serverSideApply(k.objects, deployment);
    expect(await acts.servedRefOf('local', tenantId, 'legacy', 'v1')).toMatchObject({ name: legacy });
    expect(await acts.applyModelVersion(spec('legacy', 'v1'))).toMatchObject({ name: legacy });
    expect((await deployments()).filter((n) => n.startsWith('legacy'))).toEqual([legacy]);
  });
});
