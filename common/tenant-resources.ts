/**
 * What a tenant owns outside the platform store and the clusters (its storage scope). POST /v1/platform/tenants
 * creates them with the tenant; the tenant's deletion run (workflows/tenant-deletion.ts) removes them. Each step is
 * idempotent, so a create or delete that failed half-way is finished by calling it again.
 */
export interface TenantResources {
  /** For error messages and the README's list. */
  name: string;
  create(tenantId: string): Promise<void>;
  remove(tenantId: string): Promise<void>;
}
