import type { TenantResources } from './tenant-resources';
import type { ObjectStore } from './objectstore';
import type { StorageAdmin } from './storage-admin';
import type { StorageScopeStore } from './store/storage-scope';

/**
 * A tenant's storage scope: its own bucket, owned by its own S3 user when the store has identity management
 * (`admin`), else made with the platform's credential. Removal takes the tenant off the buckets granted to it, then
 * empties and removes its bucket and removes its user.
 */
export const tenantStorage = (
  scopes: StorageScopeStore,
  objects: ObjectStore,
  admin?: StorageAdmin,
): TenantResources => ({
  name: 'storage',
  async create(tenantId) {
    const bucket = scopes.bucketOf(tenantId);
    if (admin) await admin.provisionTenant(tenantId, bucket);
    else await objects.ensureBucket(bucket);
  },
  async remove(tenantId) {
    for (const bucket of await scopes.grantsOf(tenantId))
      await scopes.setGrant(tenantId, bucket, false, async (grantees) => {
        if (await objects.hasBucket(bucket)) await admin?.setReaders(bucket, grantees);
      });
    await objects.removeBucket(scopes.bucketOf(tenantId));
    await admin?.removeTenant(tenantId);
  },
});
