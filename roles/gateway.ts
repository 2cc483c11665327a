import { buildGatewayApp } from '../api/gateway/app';
import { loadConfig } from '../common/config';
import { createLogger } from '../common/logger';
import { createPool } from '../common/store/pool';
import { httpAppDepsOf, runRole, serveUntilStopped } from './http-server';

/**
 * The gateway role (`node dist/roles/gateway.js`): the inference routes, /v1/models, health and /metrics. It needs
 * PostgreSQL only (keys, routes, limits, usage, audit), not Temporal, and it does not migrate: the api role or the
 * chart's migration Job does.
 */
async function main(): Promise<void> {
  const config = loadConfig();
  const logger = createLogger('llmhub-gateway', config.LOG_LEVEL);
  const db = createPool(config.DATABASE_URL, config.DATABASE_POOL_MAX);
  const app = await buildGatewayApp(httpAppDepsOf(config, db, logger));
  await serveUntilStopped(app, config, logger, () => db.end());
}

runRole(main);
