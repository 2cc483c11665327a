import { createHmac } from 'node:crypto';

/** An S3 identity's keys. */
export interface S3Credentials {
  accessKeyId: string;
  secretAccessKey: string;
}

/**
 * The object store's identity management, for tenant storage scopes: each tenant gets its own S3 user owning its
 * bucket, and read access to the buckets an operator grants it. Every call is idempotent. Implementations: versitygw
 * (its admin API, dev and tests); AWS IAM or MinIO would implement the same four calls with a user (or role) per
 * tenant and a policy on the granted buckets.
 */
export interface StorageAdmin {
  /** The tenant's user exists with `credentialsOf(tenantId)` and owns `bucket`, which exists. */
  provisionTenant(tenantId: string, bucket: string): Promise<void>;
  /** The tenant's user is gone (its bucket is emptied and removed by the caller, with the platform's credential). */
  removeTenant(tenantId: string): Promise<void>;
  /** `bucket` (not a tenant's own) can be read, and only read, by exactly these tenants' users (an existing bucket). */
  setReaders(bucket: string, tenantIds: string[]): Promise<void>;
  /** The keys of the tenant's user: what its workloads get, and nothing more. */
  credentialsOf(tenantId: string): S3Credentials;
}

/**
 * Tenant keys are derived from a seed the platform holds (HMAC, one-way), so the API that creates the user and the
 * worker that hands the keys to a tenant's Jobs agree without storing the secret anywhere.
 */
export function derivedTenantCredentials(seed: string, tenantId: string): S3Credentials {
  return {
    accessKeyId: `llmhub-tenant-${tenantId}`,
    secretAccessKey: createHmac('sha256', seed).update(`tenant-s3-secret\0${tenantId}`).digest('base64url'),
  };
}
