/**
 * What a tenant owns outside the platform store (its storage scope, its Kubernetes namespaces). The operator's
 * tenant routes create them with the tenant and remove them with it; each step is idempotent, so a create or delete
 * that failed half-way is finished by calling it again.
 */
export interface TenantResources {
  /** For error messages and the README's list. */
  name: string;
  create(tenantId: string): Promise<void>;
  remove(tenantId: string): Promise<void>;
}
