import { createHash } from 'node:crypto';
import type { Pool } from 'pg';
import { BadRequestError, ForbiddenError } from '../errors';
import { inTransaction } from './pool';
import { InvalidObjectUriError, parseObjectUri, type ObjectRef } from '../objectstore';

/**
 * A tenant's own bucket: `<prefix><tenant id>`, or, when that is not a bucket name S3 accepts (longer than 63
 * characters, a trailing dash, a suffix AWS reserves), the id's start and a hash of the whole id. Tenant ids are
 * already lower-case letters, digits and dashes, as bucket names need.
 */
export function tenantBucketOf(prefix: string, tenantId: string): string {
  const plain = `${prefix}${tenantId}`;
  if (plain.length <= 63 && !/(-|-s3alias|--ol-s3|--x-s3|--table-s3)$/.test(plain)) return plain;
  const hash = createHash('sha256').update(tenantId).digest('hex').slice(0, 16);
  return `${prefix}${tenantId.slice(0, 63 - prefix.length - hash.length - 1).replace(/-+$/, '')}-${hash}`;
}

/** What a tenant may name in object URIs: its own bucket (read and write) and the buckets granted to it (read). */
export interface TenantScope {
  bucket: string;
  grants: string[];
}

/** Why `uri` is not one the tenant may name, or undefined when it may. Decided from the URI alone: no S3 call. */
export function outOfScope(scope: TenantScope, uri: string, access: 'read' | 'write' = 'read'): string | undefined {
  let ref: ObjectRef;
  try {
    ref = parseObjectUri(uri);
  } catch (err) {
    if (err instanceof InvalidObjectUriError) return err.message;
    throw err;
  }
  if (ref.bucket === scope.bucket) return undefined;
  if (access === 'read' && scope.grants.includes(ref.bucket)) return undefined;
  return `'${uri}' is outside the tenant's storage scope (its bucket '${scope.bucket}'${
    scope.grants.length ? ` and the buckets granted to it: ${scope.grants.join(', ')}` : ''
  })`;
}

/** Tenants' storage scopes: the bucket named after each tenant, and the operator's grants (table storage_grants). */
export class StorageScopeStore {
  constructor(
    private readonly db: Pool,
    /** LLMHUB_TENANT_BUCKET_PREFIX */
    readonly bucketPrefix: string,
  ) {}

  bucketOf(tenantId: string): string {
    return tenantBucketOf(this.bucketPrefix, tenantId);
  }

  /** Buckets named like tenants' own: never granted, so one tenant's bucket cannot be opened to another. */
  isTenantBucketName(bucket: string): boolean {
    return bucket.startsWith(this.bucketPrefix);
  }

  async scopeOf(tenantId: string): Promise<TenantScope> {
    return { bucket: this.bucketOf(tenantId), grants: await this.grantsOf(tenantId) };
  }

  async grantsOf(tenantId: string): Promise<string[]> {
    const { rows } = await this.db.query<{ bucket: string }>(
      'SELECT bucket FROM storage_grants WHERE tenant_id = $1 ORDER BY bucket',
      [tenantId],
    );
    return rows.map((r) => r.bucket);
  }

  /** The scopes of these tenants, in one query. */
  async scopesOf(tenantIds: string[]): Promise<Map<string, TenantScope>> {
    const { rows } = await this.db.query<{ tenant_id: string; bucket: string }>(
      'SELECT tenant_id, bucket FROM storage_grants WHERE tenant_id = ANY($1) ORDER BY bucket',
      [tenantIds],
    );
    return new Map(
      tenantIds.map((id) => [
        id,
        { bucket: this.bucketOf(id), grants: rows.filter((r) => r.tenant_id === id).map((r) => r.bucket) },
      ]),
    );
  }

  /** The tenants a bucket is granted to: who its bucket policy lets read. */
  async granteesOf(bucket: string): Promise<string[]> {
    const { rows } = await this.db.query<{ tenant_id: string }>(
      'SELECT tenant_id FROM storage_grants WHERE bucket = $1 ORDER BY tenant_id',
      [bucket],
    );
    return rows.map((r) => r.tenant_id);
  }

  /**
   * Grants or revokes one bucket for one tenant. `apply` gets the bucket's grantees as they will be (to set its policy
   * at the S3 server) before the row changes, all under a lock on the bucket, so concurrent changes of one bucket's
   * grants cannot leave a revoked tenant in its policy; a failed `apply` changes nothing.
   */
  async setGrant(
    tenantId: string,
    bucket: string,
    granted: boolean,
    apply: (grantees: string[]) => Promise<void>,
  ): Promise<void> {
    await inTransaction(this.db, async (c) => {
      await c.query("SELECT pg_advisory_xact_lock(hashtext('storage_grants:' || $1))", [bucket]);
      const { rows } = await c.query<{ tenant_id: string }>(
        'SELECT tenant_id FROM storage_grants WHERE bucket = $1 AND tenant_id <> $2 ORDER BY tenant_id',
        [bucket, tenantId],
      );
      await apply([...rows.map((r) => r.tenant_id), ...(granted ? [tenantId] : [])]);
      await c.query(
        granted
          ? 'INSERT INTO storage_grants (tenant_id, bucket) VALUES ($1, $2) ON CONFLICT DO NOTHING'
          : 'DELETE FROM storage_grants WHERE tenant_id = $1 AND bucket = $2',
        [tenantId, bucket],
      );
    });
  }
}

/**
 * The API's check of a URI a tenant sent, naming the field: 400 when malformed, 403 when outside the tenant's scope;
 * decided before any S3 call, so it tells nothing of what exists.
 */
export async function checkUriInScope(
  scopes: StorageScopeStore,
  tenantId: string,
  uri: string,
  field: string,
): Promise<void> {
  try {
    parseObjectUri(uri);
  } catch (err) {
    if (err instanceof InvalidObjectUriError) throw new BadRequestError(err.message, field);
    throw err;
  }
  // A well-formed URI the tenant may not name: forbidden, the same whether the object exists or not.
  const why = outOfScope(await scopes.scopeOf(tenantId), uri);
  if (why) throw new ForbiddenError(why, { field });
}
