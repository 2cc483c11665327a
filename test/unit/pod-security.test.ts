import { describe, expect, it } from '@jest/globals';
import { ApplicationFailure } from '@temporalio/common';
import { tenantNamespace } from '../../activities/kubernetes/client';
import { renderModelServer, servingName, type ModelServerSpec } from '../../activities/kubernetes/manifests';
import {
  PRIVATE_RANGES,
  tenantNamespacePolicyOf,
  tenantNetworkPolicy,
  tenantResourceQuota,
  tenantWorkerRoleBinding,
} from '../../activities/kubernetes/tenant-namespace';
import { ConfigError, loadConfig } from '../../common/config';
import {
  FORBIDDEN_ENV_PATTERN,
  forbiddenEnvName,
  forbiddenPodMetadataKey,
  podMetadataKeyPattern,
  podMetadataKeysOf,
} from '../../common/workload-policy';
import { ClusterFailures } from '../../contracts/cluster';
import { servingSpec as serving, tenantWorkloads } from '../support/workloads';

/** Fields that give a pod the node's namespaces, devices, files or kernel settings; none may appear anywhere in a spec. */
const FORBIDDEN_FIELDS = [
  'hostPath',
  'hostNetwork',
  'hostPID',
  'hostIPC',
  'hostUsers',
  'hostPort',
  'privileged',
  'procMount',
  'sysctls',
  'hostProcess',
  'nodeName',
  'ephemeralContainers',
  'shareProcessNamespace',
  'serviceAccountName',
];

/** Configuration with its defaults but for `env`. */
const configWith = (env: Record<string, string>) => loadConfig({ DATABASE_URL: 'postgres://unused', ...env });

/** Every key of an object, at any depth. */
const keysOf = (v: unknown): string[] =>
  Array.isArray(v)
    ? v.flatMap(keysOf)
    : v && typeof v === 'object'
      ? Object.entries(v).flatMap(([k, x]) => [k, ...keysOf(x)])
      : [];

describe('tenant pods', () => {
  it.each(tenantWorkloads('llmhub-acme'))('%s pods meet the restricted Pod Security Standard', (_kind, template) => {
    const pod = template.spec!;
    expect(keysOf(pod).filter((k) => FORBIDDEN_FIELDS.includes(k))).toEqual([]);
    expect(pod.automountServiceAccountToken).toBe(false);
    expect(pod.securityContext).toMatchObject({ runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } });
    expect(pod.securityContext!.runAsUser).toBeGreaterThan(0);
    // No volumes at all (so no hostPath either) and no init containers besides the checked ones.
    expect(pod.volumes).toBeUndefined();
    expect(pod.initContainers).toBeUndefined();
    for (const c of pod.containers) {
      expect(c.securityContext).toMatchObject({
        allowPrivilegeEscalation: false,
        capabilities: { drop: ['ALL'] },
        runAsNonRoot: true,
        seccompProfile: { type: 'RuntimeDefault' },
      });
      expect(c.securityContext?.runAsUser ?? pod.securityContext!.runAsUser).toBeGreaterThan(0);
      // Tenant namespaces bound requested CPU and memory (ResourceQuota): a pod without requests is refused.
      expect(c.resources?.requests).toMatchObject({ cpu: expect.any(String), memory: expect.any(String) });
      expect(c.securityContext?.capabilities?.add).toBeUndefined();
    }
  });

  it('tenant namespaces enforce the restricted standard', () => {
    expect(tenantNamespace('llmhub-acme').metadata?.labels).toMatchObject({
      'pod-security.kubernetes.io/enforce': 'restricted',
    });
  });

  it("bound a tenant namespace's GPUs by the tenant's quota, and pods, CPU and memory by configuration", () => {
    const policy = tenantNamespacePolicyOf(
      configWith({ LLMHUB_TENANT_RESOURCE_QUOTA: '{"pods":"10","requests.cpu":"8"}' }),
    );
    expect(tenantResourceQuota('llmhub-acme', 3, policy)).toMatchObject({
      metadata: { namespace: 'llmhub-acme' },
      spec: { hard: { pods: '10', 'requests.cpu': '8', 'requests.nvidia.com/gpu': '3' } },
    });
    // Configuration cannot lift the GPU bound above the tenant's quota.
    const lifted = tenantNamespacePolicyOf(
      configWith({ LLMHUB_TENANT_RESOURCE_QUOTA: '{"requests.nvidia.com/gpu":"99"}' }),
    );
    expect(tenantResourceQuota('ns', 0, lifted).spec?.hard).toEqual({ 'requests.nvidia.com/gpu': '0' });
    expect(() => tenantNamespacePolicyOf(configWith({ LLMHUB_TENANT_RESOURCE_QUOTA: '{"pods":10}' }))).toThrow(
      ConfigError,
    );
  });

  it('isolate tenant pods: in only from their namespace and the platform, out to DNS, the object store and public addresses', () => {
    const policy = tenantNamespacePolicyOf(
      configWith({ LLMHUB_PLATFORM_NAMESPACE: 'platform', LLMHUB_TENANT_EGRESS_CIDRS: ' 10.9.0.5/32 , fd00:1::/64' }),
    );
    const spec = tenantNetworkPolicy('llmhub-acme', policy).spec!;
    expect(spec.podSelector).toEqual({});
    expect(spec.policyTypes).toEqual(['Ingress', 'Egress']);
    expect(spec.ingress).toEqual([
      {
        _from: [
          { podSelector: {} },
          { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'platform' } } },
        ],
      },
    ]);
    const egress = spec.egress!;
    const dns = egress.find((r) => r.ports?.some((p) => p.port === 53));
    expect(dns?.to).toEqual([
      {
        namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'kube-system' } },
        podSelector: { matchLabels: { 'k8s-app': 'kube-dns' } },
      },
    ]);
    const blocks = egress.flatMap((r) => r.to ?? []).flatMap((t) => (t.ipBlock ? [t.ipBlock] : []));
    expect(blocks).toEqual([
      { cidr: '10.9.0.5/32' },
      { cidr: 'fd00:1::/64' },
      { cidr: '0.0.0.0/0', except: [...PRIVATE_RANGES.v4] },
      { cidr: '::/0', except: [...PRIVATE_RANGES.v6] },
    ]);
    // The metadata endpoint and the cluster's private networks are outside every allowed public block.
    expect(PRIVATE_RANGES.v4).toEqual(expect.arrayContaining(['169.254.0.0/16', '10.0.0.0/8', '172.16.0.0/12']));
    // Egress to other pods is only to the namespace's own (podSelector without a namespaceSelector).
    expect(egress.flatMap((r) => r.to ?? []).filter((t) => t.namespaceSelector && !t.podSelector)).toEqual([]);
    for (const bad of ['10.0.0.1', '10.0.0.0/33', 'example.com/8', '::/129'])
      expect(() => tenantNamespacePolicyOf(configWith({ LLMHUB_TENANT_EGRESS_CIDRS: bad }))).toThrow(ConfigError);
  });

  it("binds the worker's tenant role to its own ServiceAccount only when both are configured", () => {
    expect(tenantNamespacePolicyOf(configWith({})).workerRole).toBeUndefined();
    const { workerRole } = tenantNamespacePolicyOf(
      configWith({ LLMHUB_TENANT_ROLE: 'llmhub-llmhub-tenant', LLMHUB_WORKER_SERVICE_ACCOUNT: 'llmhub:llmhub-worker' }),
    );
    expect(tenantWorkerRoleBinding('llmhub-acme', workerRole!)).toMatchObject({
      kind: 'RoleBinding',
      metadata: { name: 'llmhub-worker', namespace: 'llmhub-acme' },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'llmhub-llmhub-tenant' },
      subjects: [{ kind: 'ServiceAccount', namespace: 'llmhub', name: 'llmhub-worker' }],
    });
    expect(() => tenantNamespacePolicyOf(configWith({ LLMHUB_TENANT_ROLE: 'r' }))).toThrow(/set together/);
    expect(() => configWith({ LLMHUB_WORKER_SERVICE_ACCOUNT: 'no-namespace' })).toThrow(ConfigError);
  });

  it('a model server refuses loader and runtime variables and prefixed pod metadata, as a non-retryable failure', () => {
    const render =
      (s: Partial<ModelServerSpec>, allowed: string[] = []) =>
      () =>
        renderModelServer({ ...serving, ...s }, { namespace: 'ns', name: 'llama-v2' }, { image: 'x' }, allowed);
    for (const env of [
      { LD_PRELOAD: '/tmp/x.so' },
      { NODE_OPTIONS: '--require /tmp/x' },
      { PYTHONPATH: '/tmp' },
    ] as Record<string, string>[]) {
      expect(render({ env })).toThrow(ApplicationFailure);
    }
    const err = (() => {
      try {
        render({ podAnnotations: { 'sidecar.istio.io/inject': 'false' } })();
      } catch (e) {
        return e;
      }
    })();
    expect(err).toMatchObject({ type: ClusterFailures.invalidManifest, nonRetryable: true });
    expect(render({ podAnnotations: { 'example.com/owner': 'x' } }, ['example.com/'])).not.toThrow();
  });
});

describe('workload policy', () => {
  it('names loader, runtime and platform variables, and lets ordinary ones through', () => {
    for (const name of ['LD_PRELOAD', 'ld_library_path', 'DYLD_INSERT_LIBRARIES', 'NODE_OPTIONS', 'PYTHONPATH']) {
      expect(forbiddenEnvName(name)).toBeDefined();
    }
    for (const name of [
      'JAVA_TOOL_OPTIONS',
      'BASH_ENV',
      'NVIDIA_VISIBLE_DEVICES',
      'AWS_SECRET_ACCESS_KEY',
      'LLMHUB_MODEL_URI',
    ]) {
      expect(forbiddenEnvName(name)).toBeDefined();
    }
    for (const name of ['LOG_LEVEL', 'HF_TOKEN', 'MAX_MODEL_LEN', 'ENV', 'CUDA_VISIBLE_DEVICES']) {
      expect(forbiddenEnvName(name)).toBeUndefined();
    }
  });

  it('allows unprefixed keys, and prefixed ones only as the operator lists them', () => {
    const allowed = podMetadataKeysOf(' llmhub.dev/kwok-behaviour , example.com/ ,');
    expect(allowed).toEqual(['llmhub.dev/kwok-behaviour', 'example.com/']);
    expect(forbiddenPodMetadataKey('team', allowed)).toBeUndefined();
    expect(forbiddenPodMetadataKey('llmhub.dev/kwok-behaviour', allowed)).toBeUndefined();
    expect(forbiddenPodMetadataKey('example.com/anything', allowed)).toBeUndefined();
    for (const key of [
      'container.apparmor.security.beta.kubernetes.io/model-server',
      'sidecar.istio.io/inject',
      'linkerd.io/inject',
      'llmhub.dev/tenant',
    ]) {
      expect(forbiddenPodMetadataKey(key, allowed)).toMatch(/LLMHUB_POD_METADATA_KEYS/);
    }
    expect(forbiddenPodMetadataKey('-bad', allowed)).toMatch(/not a valid/);
  });

  it("the request schemas' patterns refuse exactly what the checks refuse", () => {
    const env = new RegExp(FORBIDDEN_ENV_PATTERN);
    for (const name of [
      'LD_PRELOAD',
      'ld_library_path',
      'Node_Options',
      'PATH',
      'path',
      'LLMHUB_X',
      'aws_key',
      'IFS',
    ]) {
      expect({ name, refused: env.test(name) }).toEqual({ name, refused: true });
    }
    for (const name of ['PATHS', 'MY_PATH', 'LOG_LEVEL', 'HF_TOKEN', 'XLD_', 'IFS2', 'CUDA_VISIBLE_DEVICES']) {
      expect({ name, refused: env.test(name) }).toEqual({ name, refused: forbiddenEnvName(name) !== undefined });
    }
    const allowed = podMetadataKeysOf('llmhub.dev/kwok-behaviour,example.com/');
    const keys = new RegExp(podMetadataKeyPattern(allowed));
    for (const key of [
      'team',
      'a',
      'llmhub.dev/kwok-behaviour',
      'example.com/anything',
      'example.com/-bad',
      'exampleXcom/anything',
      'sidecar.istio.io/inject',
      'llmhub.dev/tenant',
      '-bad',
      'bad-',
      'x'.repeat(64),
    ]) {
      expect({ key, allowed: keys.test(key) }).toEqual({
        key,
        allowed: forbiddenPodMetadataKey(key, allowed) === undefined,
      });
    }
    expect(new RegExp(podMetadataKeyPattern([])).test('example.com/x')).toBe(false);
  });
});

describe('serving names', () => {
  it('are DNS-1035 labels of at most 63 characters, one per (model, version) pair', () => {
    const names = [
      servingName('a', 'b-c'),
      servingName('a-b', 'c'),
      servingName('9lives', 'v1'),
      servingName('m'.repeat(63), 'V'.repeat(63)),
    ];
    expect(new Set(names).size).toBe(names.length);
    for (const n of names) expect(n).toMatch(/^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$/);
    expect(servingName('a', 'b-c')).toBe(servingName('a', 'b-c'));
  });
});
