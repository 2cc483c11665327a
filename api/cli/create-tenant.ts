import { parseArgs } from 'node:util';
import { loadConfig } from '../../common/config';
import { migrate } from '../../common/store/migrate';
import { createPool } from '../../common/store/pool';
import { TenantStore } from '../../common/store/tenants';
import { Roles, type Role } from '../../contracts/approvals';
import { isValidTenantId } from '../../contracts/operations';

/** Creates a tenant (if missing) and an API key for it; prints the key once. */
async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      tenant: { type: 'string' },
      name: { type: 'string' },
      role: { type: 'string', default: 'admin' },
      'key-name': { type: 'string', default: 'first-admin' },
    },
  });
  if (!values.tenant || !isValidTenantId(values.tenant)) {
    throw new Error('--tenant <id> is required (lower-case letters, digits, -)');
  }
  if (!(Roles as readonly string[]).includes(values.role!))
    throw new Error(`--role must be one of ${Roles.join(', ')}`);
  const config = loadConfig();
  const db = createPool(config.DATABASE_URL, 1);
  try {
    await migrate(db);
    const tenants = new TenantStore(db);
    await tenants.createTenant(values.tenant, values.name ?? values.tenant);
    const key = await tenants.createApiKey(values.tenant, values['key-name']!, values.role as Role);
    process.stdout.write(
      `${JSON.stringify({ tenant: values.tenant, role: values.role, keyId: key.id, apiKey: key.key })}\n`,
    );
  } finally {
    await db.end();
  }
}

main().catch((err) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
