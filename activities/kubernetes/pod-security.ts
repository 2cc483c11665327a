import type { V1PodSpec, V1SecurityContext } from '@kubernetes/client-node';

/**
 * Pod Security Standards "restricted" for every pod the platform runs for a tenant (model servers, trainers,
 * conversion Jobs). Tenant namespaces enforce the same level, so the API server itself refuses any pod that does not
 * comply, whoever creates it.
 */
export const TENANT_NAMESPACE_LABELS = {
  'pod-security.kubernetes.io/enforce': 'restricted',
  'pod-security.kubernetes.io/enforce-version': 'latest',
} as const;

/** A numeric non-root user, so the kubelet can verify runAsNonRoot whatever USER the image declares. */
export const TENANT_POD_UID = 10001;

export const restrictedPod: Pick<V1PodSpec, 'securityContext' | 'automountServiceAccountToken'> = {
  // Tenant code has no business with the Kubernetes API.
  automountServiceAccountToken: false,
  securityContext: {
    runAsNonRoot: true,
    runAsUser: TENANT_POD_UID,
    runAsGroup: TENANT_POD_UID,
    fsGroup: TENANT_POD_UID,
    seccompProfile: { type: 'RuntimeDefault' },
  },
};

export const restrictedContainer: V1SecurityContext = {
  allowPrivilegeEscalation: false,
  capabilities: { drop: ['ALL'] },
  runAsNonRoot: true,
  seccompProfile: { type: 'RuntimeDefault' },
};
