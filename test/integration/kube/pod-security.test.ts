import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { NetworkingV1Api, type V1Pod } from '@kubernetes/client-node';
import {
  ensureTenantNamespace,
  TENANT_NETWORK_POLICY,
  TENANT_RESOURCE_QUOTA,
} from '../../../activities/kubernetes/tenant-namespace';
import { tenantWorkloads } from '../../support/workloads';
import { deleteNamespace, IMAGE, kube, tenantNamespaceDeps, uniqueName, waitFor, type Kube } from './kube-helpers';

/** The tenant's GPU quota in these tests: room for the rendered GPU pods (one GPU each), not for a pod of 5. */
const GPUS = 4;

/** The local control plane's own admission: what a tenant namespace lets in, whoever creates the pod. */
describe('tenant namespaces on the real API server', () => {
  let k: Kube;
  let ns: string;
  const ensure = () =>
    ensureTenantNamespace(k.objects, 'acme', { namespaceOf: () => ns, ...tenantNamespaceDeps(GPUS) });
  const readPolicies = async () => ({
    quota: await k.core.readNamespacedResourceQuota({ name: TENANT_RESOURCE_QUOTA, namespace: ns }),
    network: await k.kc
      .makeApiClient(NetworkingV1Api)
      .readNamespacedNetworkPolicy({ name: TENANT_NETWORK_POLICY, namespace: ns }),
  });

  beforeAll(async () => {
    k = kube();
    ns = uniqueName('llmhub-pss');
    await ensure();
    await waitFor(`default service account in ${ns}`, async () => {
      await k.core.readNamespacedServiceAccount({ name: 'default', namespace: ns });
      return true;
    });
    // Quota admission refuses every pod until the quota controller has computed the quota's usage.
    await waitFor(`usage of ${TENANT_RESOURCE_QUOTA} computed`, async () => {
      const q = await k.core.readNamespacedResourceQuota({ name: TENANT_RESOURCE_QUOTA, namespace: ns });
      return q.status?.used?.['requests.nvidia.com/gpu'] !== undefined;
    });
  }, 120_000);

  afterAll(async () => {
    if (k && ns) await deleteNamespace(k, ns);
  });

  const pod = (name: string, spec: V1Pod['spec']): V1Pod => ({ metadata: { name, namespace: ns }, spec });
  /** The API server's Status for a refused create: its HTTP code and message. */
  const refusal = async (body: V1Pod): Promise<{ code: number; message: string }> => {
    try {
      await k.core.createNamespacedPod({ namespace: ns, body });
    } catch (err) {
      const status = JSON.parse(String((err as { body?: unknown }).body)) as { code: number; message: string };
      return { code: status.code, message: status.message };
    }
    throw new Error(`the API server admitted pod ${body.metadata?.name}`);
  };

  test('refuses a privileged pod, a pod with no security context and one that keeps its capabilities', async () => {
    const privileged = await refusal(
      pod('privileged', { containers: [{ name: 'c', image: IMAGE, securityContext: { privileged: true } }] }),
    );
    expect(privileged.code).toBe(403);
    expect(privileged.message).toMatch(/violates PodSecurity "restricted:latest": privileged/);
    const plain = await refusal(pod('plain', { containers: [{ name: 'c', image: IMAGE }] }));
    expect(plain.code).toBe(403);
    expect(plain.message).toMatch(/violates PodSecurity "restricted:latest".*runAsNonRoot != true/);
    const keepsCaps = await refusal(
      pod('keeps-caps', {
        securityContext: { runAsNonRoot: true, runAsUser: 1000, seccompProfile: { type: 'RuntimeDefault' } },
        containers: [{ name: 'c', image: IMAGE, securityContext: { allowPrivilegeEscalation: false } }],
      }),
    );
    expect(keepsCaps.message).toMatch(/unrestricted capabilities/);
  });

  test('holds a ResourceQuota bounding GPUs by the tenant quota and a default-deny NetworkPolicy, applied idempotently', async () => {
    const before = await readPolicies();
    expect(before.quota.spec?.hard).toMatchObject({
      'requests.nvidia.com/gpu': String(GPUS),
      pods: expect.any(String),
      'requests.cpu': expect.any(String),
      'requests.memory': expect.any(String),
    });
    const np = before.network.spec!;
    expect(np.podSelector).toEqual({});
    expect(np.policyTypes).toEqual(['Ingress', 'Egress']);
    expect(np.ingress?.[0]?._from).toEqual([
      { podSelector: {} },
      { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'llmhub' } } },
    ]);
    expect(
      np.egress?.flatMap((r) => r.to ?? []).find((t) => t.ipBlock?.cidr === '0.0.0.0/0')?.ipBlock?.except,
    ).toContain('169.254.0.0/16');
    await ensure();
    const after = await readPolicies();
    expect(after.quota.metadata?.resourceVersion).toBe(before.quota.metadata?.resourceVersion);
    expect(after.network.metadata?.resourceVersion).toBe(before.network.metadata?.resourceVersion);
  });

  test.each(tenantWorkloads('', IMAGE))("admits the platform's own %s pod as rendered", async (kind, template) => {
    const created = await k.core.createNamespacedPod({
      namespace: ns,
      body: { metadata: { name: `platform-${kind}`, namespace: ns }, spec: template.spec },
    });
    expect(created.metadata?.uid).toBeDefined();
    // automountServiceAccountToken: false is honoured by the ServiceAccount admission: no token volume was added.
    expect(created.spec?.volumes ?? []).toEqual([]);
  });

  test('refuses a compliant pod that requests more GPUs than the tenant quota', async () => {
    const [, serving] = tenantWorkloads('', IMAGE)[0]!;
    const spec = structuredClone(serving.spec!);
    spec.containers[0]!.resources = {
      requests: { cpu: '1', memory: '1Gi' },
      limits: { 'nvidia.com/gpu': String(GPUS + 1) },
    };
    const over = await refusal(pod('too-many-gpus', spec));
    expect(over.code).toBe(403);
    expect(over.message).toMatch(
      new RegExp(`exceeded quota: ${TENANT_RESOURCE_QUOTA}, requested: requests.nvidia.com/gpu=${GPUS + 1}`),
    );
  });
});
