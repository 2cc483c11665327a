import type { KubernetesObjectApi, V1EnvVar, V1Secret } from '@kubernetes/client-node';
import type { S3Credentials } from '../../common/storage-admin';
import { serverSideApply } from './client';
import { dnsLabel, FIELD_MANAGER, Labels, labelValue } from './manifests';

/** Where a tenant's pods find the object store: settings only, never credentials. */
export function s3SettingsEnv(c: {
  S3_ENDPOINT?: string;
  S3_REGION: string;
  S3_FORCE_PATH_STYLE: boolean;
}): V1EnvVar[] {
  return [
    ...(c.S3_ENDPOINT ? [{ name: 'S3_ENDPOINT', value: c.S3_ENDPOINT }] : []),
    { name: 'S3_REGION', value: c.S3_REGION },
    { name: 'S3_FORCE_PATH_STYLE', value: String(c.S3_FORCE_PATH_STYLE) },
  ];
}

/** One per tenant (two tenants may be mapped to one namespace). */
export const tenantS3SecretName = (tenantId: string): string => dnsLabel(`llmhub-s3-${tenantId}`);

/**
 * Applies the Secret holding the tenant's own S3 keys (its storage scope's user, never the platform's) into the
 * namespace its pods run in, labelled for the tenant, and answers the env that reads it. No keys (no storage admin
 * configured): no Secret and no env, and the pods use the namespace's cloud identity.
 */
export async function tenantS3Env(
  objects: KubernetesObjectApi,
  namespace: string,
  tenantId: string,
  credentials: S3Credentials | undefined,
): Promise<V1EnvVar[]> {
  if (!credentials) return [];
  const name = tenantS3SecretName(tenantId);
  const secret: V1Secret = {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: {
      name,
      namespace,
      labels: { [Labels.tenant]: labelValue(tenantId), 'app.kubernetes.io/managed-by': FIELD_MANAGER },
    },
    type: 'Opaque',
    data: {
      AWS_ACCESS_KEY_ID: Buffer.from(credentials.accessKeyId).toString('base64'),
      AWS_SECRET_ACCESS_KEY: Buffer.from(credentials.secretAccessKey).toString('base64'),
    },
  };
  await serverSideApply(objects, secret);
  return Object.keys(secret.data!).map((key) => ({ name: key, valueFrom: { secretKeyRef: { name, key } } }));
}
