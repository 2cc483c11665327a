import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { PatchStrategy, type V1Pod } from '@kubernetes/client-node';
import { tenantNamespace } from '../../../activities/kubernetes/client';
import { renderModelServer } from '../../../activities/kubernetes/manifests';
import { deleteNamespace, FIELD_MANAGER, IMAGE, kube, uniqueName, waitFor, type Kube } from './kube-helpers';

/** The local control plane's own admission: what a tenant namespace lets in, whoever creates the pod. */
describe('tenant namespaces on the real API server', () => {
  let k: Kube;
  let ns: string;

  beforeAll(async () => {
    k = kube();
    ns = uniqueName('llmhub-pss');
    await k.objects.patch(
      tenantNamespace(ns),
      undefined,
      undefined,
      FIELD_MANAGER,
      true,
      PatchStrategy.ServerSideApply,
    );
    await waitFor(`default service account in ${ns}`, async () => {
      await k.core.readNamespacedServiceAccount({ name: 'default', namespace: ns });
      return true;
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

  test("admits the platform's own model-server pod as rendered", async () => {
    const { deployment } = renderModelServer(
      {
        cluster: 'local',
        tenantId: 'acme',
        modelId: 'llama',
        version: 'v1',
        workflowId: 'rollout/acme/k1',
        artifactUri: 's3://acme/llama/v1',
        resources: { cpu: '1', gpu: 0, memory: '1Gi' },
        env: {},
        podAnnotations: {},
        podLabels: {},
      },
      { namespace: ns, name: 'model-server' },
      { image: IMAGE },
    );
    const created = await k.core.createNamespacedPod({
      namespace: ns,
      body: { metadata: { name: 'model-server', namespace: ns }, spec: deployment.spec!.template.spec },
    });
    expect(created.metadata?.uid).toBeDefined();
  });
});
