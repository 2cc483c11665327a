import { expect } from '@jest/globals';
import { CoreV1Api, type KubeConfig, type V1ObjectMeta, type V1PodTemplateSpec } from '@kubernetes/client-node';
import { tenantS3SecretName } from '../../activities/kubernetes/tenant-s3';
import { testKubeConfig } from '../../deploy/dev/kube/cluster';
import { S3ObjectStore, type ObjectStore } from '../../common/objectstore';
import type { S3Credentials } from '../../common/storage-admin';

/** An object store that signs with the given keys (a tenant's), against the test S3 server. */
export const storeWith = (keys: S3Credentials): ObjectStore =>
  new S3ObjectStore({
    endpoint: process.env.S3_ENDPOINT,
    region: process.env.S3_REGION ?? 'us-east-1',
    forcePathStyle: true,
    ...keys,
  });

/**
 * A tenant's workload (a Job, a Deployment) carries S3 keys only as references to the tenant's own Secret, that Secret
 * holds the tenant's keys, and nothing in the workload or in any Secret of its namespace is the platform's credential.
 */
export async function expectTenantKeysOnly(
  job: { metadata?: V1ObjectMeta; spec?: { template: V1PodTemplateSpec } },
  tenantId: string,
  kc: KubeConfig = testKubeConfig(),
) {
  const platform = [process.env.S3_ACCESS_KEY_ID!, process.env.S3_SECRET_ACCESS_KEY!];
  const jobText = JSON.stringify(job);
  for (const secret of platform) expect(jobText).not.toContain(secret);
  const env = job.spec!.template.spec!.containers[0]!.env ?? [];
  const secretName = tenantS3SecretName(tenantId);
  for (const key of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY'])
    expect(env.filter((e) => e.name === key)).toEqual([
      { name: key, valueFrom: { secretKeyRef: { name: secretName, key } } },
    ]);
  const namespace = job.metadata!.namespace!;
  const core = kc.makeApiClient(CoreV1Api);
  const secret = await core.readNamespacedSecret({ name: secretName, namespace });
  expect(Buffer.from(secret.data!.AWS_ACCESS_KEY_ID!, 'base64').toString()).toBe(`llmhub-tenant-${tenantId}`);
  for (const s of (await core.listNamespacedSecret({ namespace })).items)
    for (const value of Object.values(s.data ?? {}))
      for (const p of platform) expect(Buffer.from(value, 'base64').toString()).not.toContain(p);
}
