import { Client, Connection } from '@temporalio/client';
import { loadConfig, clustersOf, tenantDefaultLimitOf } from '../common/config';
import { EmbedderRegistry, vectorStoreFromConfig } from '../common/knowledge';
import { createLogger } from '../common/logger';
import { tracingClientInterceptors } from '../common/temporal-tracing';
import { tracingFromConfig } from '../common/tracing';
import { loadGatewaySettings } from './gateway/settings';
import { EgressPolicy } from '../common/egress';
import { s3StoreFromConfig } from '../common/objectstore';
import { storageAdminFromConfig } from '../common/storage-admin/from-config';
import { StorageScopeStore } from '../common/store/storage-scope';
import { tenantStorage } from '../common/tenant-storage';
import { migrate } from '../common/store/migrate';
import { createPool } from '../common/store/pool';
import { buildApp } from './app';
import { podMetadataKeysOf } from '../common/workload-policy';

/** Entry point of the API process: migrate, connect, listen; close everything on SIGTERM/SIGINT. */
async function main(): Promise<void> {
  const config = loadConfig();
  const logger = createLogger('llmhub-api', config.LOG_LEVEL);
  const tracing = tracingFromConfig(config, 'api');
  const db = createPool(config.DATABASE_URL, config.DATABASE_POOL_MAX);
  const migrated = await migrate(db);
  if (migrated.applied.length) logger.info({ applied: migrated.applied }, 'database migrated');
  const connection = await Connection.connect({ address: config.TEMPORAL_ADDRESS }).catch((err: Error) => {
    throw new Error(
      `cannot reach the Temporal server at ${config.TEMPORAL_ADDRESS} (set TEMPORAL_ADDRESS): ${err.message}`,
    );
  });
  const temporal = new Client({
    connection,
    namespace: config.TEMPORAL_NAMESPACE,
    interceptors: tracingClientInterceptors(tracing),
  });
  const objects = s3StoreFromConfig(config);
  const storageAdmin = storageAdminFromConfig(config);
  const app = await buildApp({
    db,
    temporal,
    objects,
    taskQueue: config.TEMPORAL_TASK_QUEUE,
    logger,
    bodyLimitBytes: config.API_BODY_LIMIT_BYTES,
    auditRetentionDays: config.AUDIT_RETENTION_DAYS,
    trustedProxies: config.API_TRUSTED_PROXIES.split(',')
      .map((p) => p.trim())
      .filter(Boolean),
    auth: { failuresPerMinute: config.API_AUTH_FAILURES_PER_MINUTE },
    gateway: loadGatewaySettings(),
    vectors: await vectorStoreFromConfig(config),
    embedders: new EmbedderRegistry(config),
    platformBucket: config.PLATFORM_BUCKET,
    tenantBucketPrefix: config.LLMHUB_TENANT_BUCKET_PREFIX,
    ...(storageAdmin ? { storageAdmin } : {}),
    tenantResources: [
      tenantStorage(new StorageScopeStore(db, config.LLMHUB_TENANT_BUCKET_PREFIX), objects, storageAdmin),
    ],
    clusters: clustersOf(config.LLMHUB_CLUSTERS),
    podMetadataKeys: podMetadataKeysOf(config.LLMHUB_POD_METADATA_KEYS),
    mcpEgress: EgressPolicy.fromEnv(config.LLMHUB_MCP_EGRESS_ALLOW),
    jwt: {
      jwksUrl: config.JWT_JWKS_URL,
      issuer: config.JWT_ISSUER,
      audience: config.JWT_AUDIENCE,
      platformAdminClaim: config.JWT_PLATFORM_ADMIN_CLAIM,
    },
    tenantDefaults: {
      gpus: config.LLMHUB_TENANT_DEFAULT_GPUS,
      ceiling: tenantDefaultLimitOf(config.LLMHUB_TENANT_DEFAULT_LIMIT),
    },
  });
  const close = () => {
    logger.info('shutting down');
    // After app.close, not in an onClose hook: those run last-registered first, so the pool would end before
    // the gateway's and the audit's final flushes.
    app
      .close()
      .then(async () => {
        await connection.close();
        await db.end();
        await tracing?.shutdown();
      })
      .then(
        () => process.exit(0),
        () => process.exit(1),
      );
  };
  process.once('SIGTERM', close);
  process.once('SIGINT', close);
  await app.listen({ host: config.API_HOST, port: config.API_PORT });
}

main().catch((err) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
