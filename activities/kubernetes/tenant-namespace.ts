import type { KubernetesObjectApi, V1NetworkPolicy, V1ResourceQuota, V1RoleBinding } from '@kubernetes/client-node';
import { Type } from '@sinclair/typebox';
import { cidrListEnv, ConfigError, jsonEnv, type Config } from '../../common/config';
import { serverSideApply, tenantNamespace } from './client';
import { FIELD_MANAGER } from './manifests';

/** What every tenant namespace gets besides its Pod Security label, from configuration. */
export interface TenantNamespacePolicy {
  /** ResourceQuota hard limits besides GPUs (LLMHUB_TENANT_RESOURCE_QUOTA), e.g. pods, requests.cpu, requests.memory. */
  resourceQuota: Record<string, string>;
  /** The platform's namespace (LLMHUB_PLATFORM_NAMESPACE): its gateway is the only outside caller of tenant pods. */
  platformNamespace: string;
  /** Private CIDRs tenant pods may reach besides DNS: an in-cluster or private object store (LLMHUB_TENANT_EGRESS_CIDRS). */
  egressCidrs: readonly string[];
  /** The worker's rights in the namespace, bound to its own ServiceAccount (LLMHUB_TENANT_ROLE); absent: none bound. */
  workerRole?: { clusterRole: string; serviceAccount: { namespace: string; name: string } };
}

export const tenantNamespacePolicyOf = (
  c: Pick<
    Config,
    | 'LLMHUB_TENANT_RESOURCE_QUOTA'
    | 'LLMHUB_PLATFORM_NAMESPACE'
    | 'LLMHUB_TENANT_EGRESS_CIDRS'
    | 'LLMHUB_TENANT_ROLE'
    | 'LLMHUB_WORKER_SERVICE_ACCOUNT'
  >,
): TenantNamespacePolicy => {
  if (!c.LLMHUB_TENANT_ROLE !== !c.LLMHUB_WORKER_SERVICE_ACCOUNT)
    throw new ConfigError(
      'invalid configuration:\n  LLMHUB_TENANT_ROLE and LLMHUB_WORKER_SERVICE_ACCOUNT are set together or not at all',
    );
  const [saNamespace = '', saName = ''] = c.LLMHUB_WORKER_SERVICE_ACCOUNT?.split(':') ?? [];
  return {
    resourceQuota: jsonEnv(
      'LLMHUB_TENANT_RESOURCE_QUOTA',
      c.LLMHUB_TENANT_RESOURCE_QUOTA,
      Type.Record(Type.String(), Type.String()),
    ),
    platformNamespace: c.LLMHUB_PLATFORM_NAMESPACE,
    egressCidrs: cidrListEnv('LLMHUB_TENANT_EGRESS_CIDRS', c.LLMHUB_TENANT_EGRESS_CIDRS),
    ...(c.LLMHUB_TENANT_ROLE
      ? {
          workerRole: {
            clusterRole: c.LLMHUB_TENANT_ROLE,
            serviceAccount: { namespace: saNamespace, name: saName },
          },
        }
      : {}),
  };
};

export interface TenantNamespaceDeps {
  namespaceOf(tenantId: string): string;
  /** The tenant's GPU quota (set by platform operators): the namespace's bound on requested GPUs. */
  gpuQuotaOf(tenantId: string): Promise<number>;
  tenantNamespacePolicy: TenantNamespacePolicy;
}

export const TENANT_RESOURCE_QUOTA = 'llmhub-tenant-quota';
export const TENANT_NETWORK_POLICY = 'llmhub-tenant-isolation';
export const TENANT_WORKER_ROLE_BINDING = 'llmhub-worker';

/**
 * Not reachable from tenant pods: the cluster's own pod and Service networks and nodes (private and carrier-grade NAT
 * ranges), loopback, and link-local addresses, which hold the cloud metadata endpoint (169.254.169.254, fd00:ec2::254).
 */
export const PRIVATE_RANGES = {
  v4: ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '100.64.0.0/10', '169.254.0.0/16', '127.0.0.0/8'],
  v6: ['fc00::/7', 'fe80::/10', '::1/128'],
} as const;

const labels = { 'app.kubernetes.io/managed-by': FIELD_MANAGER };

/**
 * Bounds what the namespace's pods may request. The GPU bound is the tenant's GPU quota, so even a Deployment or Job
 * made past the platform's own accounting gets no pod with more GPUs; the API server's ResourceQuota admission
 * enforces it when pods are created.
 */
export const tenantResourceQuota = (
  namespace: string,
  gpus: number,
  policy: TenantNamespacePolicy,
): V1ResourceQuota => ({
  apiVersion: 'v1',
  kind: 'ResourceQuota',
  metadata: { name: TENANT_RESOURCE_QUOTA, namespace, labels },
  spec: { hard: { ...policy.resourceQuota, 'requests.nvidia.com/gpu': String(gpus) } },
});

const DNS_PORTS = [
  { protocol: 'UDP', port: 53 },
  { protocol: 'TCP', port: 53 },
];

/**
 * Default isolation of every pod in the namespace. In: only from the namespace's own pods and the platform's
 * namespace (the gateway). Out: DNS (the cluster's kube-dns pods), the configured private CIDRs (the object store), the
 * namespace's own pods, and public addresses; not the cluster's other pods and Services, its nodes, or the metadata
 * endpoint.
 */
export const tenantNetworkPolicy = (namespace: string, policy: TenantNamespacePolicy): V1NetworkPolicy => ({
  apiVersion: 'networking.k8s.io/v1',
  kind: 'NetworkPolicy',
  metadata: { name: TENANT_NETWORK_POLICY, namespace, labels },
  spec: {
    podSelector: {},
    policyTypes: ['Ingress', 'Egress'],
    ingress: [
      {
        _from: [
          { podSelector: {} },
          { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': policy.platformNamespace } } },
        ],
      },
    ],
    egress: [
      {
        to: [
          {
            namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'kube-system' } },
            podSelector: { matchLabels: { 'k8s-app': 'kube-dns' } },
          },
        ],
        ports: DNS_PORTS,
      },
      { to: [{ podSelector: {} }] },
      ...(policy.egressCidrs.length ? [{ to: policy.egressCidrs.map((cidr) => ({ ipBlock: { cidr } })) }] : []),
      {
        to: [
          { ipBlock: { cidr: '0.0.0.0/0', except: [...PRIVATE_RANGES.v4] } },
          { ipBlock: { cidr: '::/0', except: [...PRIVATE_RANGES.v6] } },
        ],
      },
    ],
  },
});

/** Gives the worker its rights inside this namespace only (the Helm chart's tenant ClusterRole). */
export const tenantWorkerRoleBinding = (
  namespace: string,
  role: NonNullable<TenantNamespacePolicy['workerRole']>,
): V1RoleBinding => ({
  apiVersion: 'rbac.authorization.k8s.io/v1',
  kind: 'RoleBinding',
  metadata: { name: TENANT_WORKER_ROLE_BINDING, namespace, labels },
  roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: role.clusterRole },
  subjects: [{ kind: 'ServiceAccount', ...role.serviceAccount }],
});

/**
 * Server-side applies the tenant's namespace with its Pod Security label, ResourceQuota and NetworkPolicy (idempotent:
 * unchanged objects are not written; a changed GPU quota reaches the namespace on its next deploy or Job).
 * A namespace that configuration maps to several tenants gets the quota of the tenant that applied last.
 */
export async function ensureTenantNamespace(
  objects: KubernetesObjectApi,
  tenantId: string,
  deps: TenantNamespaceDeps,
): Promise<string> {
  const namespace = deps.namespaceOf(tenantId);
  const policy = deps.tenantNamespacePolicy;
  await serverSideApply(objects, tenantNamespace(namespace));
  // First, so the worker holds its rights in the namespace before it writes anything else there.
  if (policy.workerRole) await serverSideApply(objects, tenantWorkerRoleBinding(namespace, policy.workerRole));
  await serverSideApply(objects, tenantResourceQuota(namespace, await deps.gpuQuotaOf(tenantId), policy));
  await serverSideApply(objects, tenantNetworkPolicy(namespace, policy));
  return namespace;
}
