import { ApplicationFailure } from '@temporalio/common';
import { outOfScope, type StorageScopeStore } from '../../common/store/storage-scope';
import { StorageFailures } from '../../contracts/storage';

/**
 * The activities' own check of the object URIs they are handed (the API checked them too, but an activity can be
 * called directly): every URI must lie in the tenant's storage scope before the platform's credential touches it.
 */
export async function requireInScope(
  scopes: StorageScopeStore,
  tenantId: string | undefined,
  uris: string[],
  access: 'read' | 'write' = 'read',
): Promise<void> {
  if (!tenantId)
    throw ApplicationFailure.nonRetryable('no tenant named: its storage scope is unknown', StorageFailures.outOfScope);
  const scope = await scopes.scopeOf(tenantId);
  for (const uri of uris) {
    const why = outOfScope(scope, uri, access);
    if (why) throw ApplicationFailure.nonRetryable(why, StorageFailures.outOfScope, { uri });
  }
}
