import { loadConfig } from '../config';
import { createLogger } from '../logger';
import { migrate } from './migrate';
import { createPool } from './pool';

/**
 * `node dist/common/store/migrate-cli.js`: applies common/store/migrations to DATABASE_URL and exits (0 when the
 * schema is current); the chart's pre-install/pre-upgrade hook Job runs it before the new pods start.
 */
async function main(): Promise<void> {
  const config = loadConfig();
  const logger = createLogger('llmhub-migrate', config.LOG_LEVEL);
  const db = createPool(config.DATABASE_URL, 1);
  try {
    const { applied, alreadyApplied } = await migrate(db);
    logger.info({ applied, alreadyApplied: alreadyApplied.length }, 'database migrated');
  } finally {
    await db.end();
  }
}

main().catch((err) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
