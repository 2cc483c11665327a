import type { TenantStore } from '../../common/store/tenants';
import type { TenantResources } from '../../common/tenant-resources';

export interface TenantActivityDeps {
  tenants: TenantStore;
  /** What a tenant owns outside the store (its storage scope), removed with it. */
  tenantResources: TenantResources[];
}

export const createTenantActivities = ({ tenants, tenantResources }: TenantActivityDeps) => ({
  /** The last step of a deletion: outside resources, then every row naming the tenant. Idempotent. */
  async removeTenantData(tenantId: string): Promise<void> {
    for (const r of tenantResources) await r.remove(tenantId);
    await tenants.deleteTenant(tenantId);
  },
});

export type TenantActivities = ReturnType<typeof createTenantActivities>;
