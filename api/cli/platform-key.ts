import { parseArgs } from 'node:util';
import { loadConfig } from '../../common/config';
import { migrate } from '../../common/store/migrate';
import { createPool } from '../../common/store/pool';
import { TenantStore } from '../../common/store/tenants';

const USAGE = `usage: platform-key create --name <who> [--expires <ISO date-time>]
       platform-key revoke --id <key id>`;

/**
 * Platform operators' keys are made only here, by whoever can reach the database: no API route mints one, so no
 * tenant credential can ever lead to an operator's. `create` prints the key once.
 */
async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { name: { type: 'string' }, expires: { type: 'string' }, id: { type: 'string' } },
  });
  const [command] = positionals;
  const db = createPool(loadConfig().DATABASE_URL, 1);
  try {
    await migrate(db);
    const tenants = new TenantStore(db);
    if (command === 'create' && values.name) {
      const expiresAt = values.expires === undefined ? null : new Date(values.expires);
      if (expiresAt && !(expiresAt.getTime() > Date.now())) throw new Error('--expires must be a future date-time');
      const key = await tenants.createPlatformKey(values.name, expiresAt);
      process.stdout.write(`${JSON.stringify({ keyId: key.id, apiKey: key.key, expiresAt })}\n`);
    } else if (command === 'revoke' && values.id) {
      if (!(await tenants.revokePlatformKey(values.id))) throw new Error(`no platform key '${values.id}'`);
    } else {
      throw new Error(USAGE);
    }
  } finally {
    await db.end();
  }
}

main().catch((err) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
