import { Client, Connection } from '@temporalio/client';
import { loadConfig, clustersOf, tenantDefaultLimitOf } from '../common/config';
import { EmbedderRegistry, vectorStoreFromConfig } from '../common/knowledge';
import { createLogger } from '../common/logger';
import { describeTemporalTarget, temporalConnectionOptions } from '../common/temporal-connection';
import { tracingClientInterceptors } from '../common/temporal-tracing';
import { tracingFromConfig } from '../common/tracing';
import { EgressPolicy } from '../common/egress';
import { s3StoreFromConfig } from '../common/objectstore';
import { storageAdminFromConfig } from '../common/storage-admin/from-config';
import { StorageScopeStore } from '../common/store/storage-scope';
import { tenantStorage } from '../common/tenant-storage';
import { migrate } from '../common/store/migrate';
import { createPool } from '../common/store/pool';
import { buildApp } from '../api/app';
import { httpAppDepsOf, runRole, serveUntilStopped } from './http-server';
import { podMetadataKeysOf } from '../common/workload-policy';

/**
 * The api role (`node dist/roles/api.js`): the control routes, and the inference routes too (knowledge chat calls
 * its own gateway in process). Migrates (a no-op once the chart's migration Job ran), connects, listens.
 */
async function main(): Promise<void> {
  const config = loadConfig();
  const logger = createLogger('llmhub-api', config.LOG_LEVEL);
  const tracing = tracingFromConfig(config, 'api');
  const db = createPool(config.DATABASE_URL, config.DATABASE_POOL_MAX);
  const migrated = await migrate(db);
  if (migrated.applied.length) logger.info({ applied: migrated.applied }, 'database migrated');
  const temporalOptions = temporalConnectionOptions(config);
  const connection = await Connection.connect(temporalOptions).catch((err: Error) => {
    throw new Error(
      `cannot reach the Temporal server at ${describeTemporalTarget(temporalOptions)} (set TEMPORAL_ADDRESS, TEMPORAL_TLS_*, TEMPORAL_API_KEY): ${err.message}`,
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
    temporal,
    objects,
    taskQueue: config.TEMPORAL_TASK_QUEUE,
    ...httpAppDepsOf(config, db, logger),
    vectors: await vectorStoreFromConfig(config),
    embedders: new EmbedderRegistry(config),
    unstructuredParser: config.UNSTRUCTURED_API_URL !== undefined,
    platformBucket: config.PLATFORM_BUCKET,
    tenantBucketPrefix: config.LLMHUB_TENANT_BUCKET_PREFIX,
    ...(storageAdmin ? { storageAdmin } : {}),
    tenantResources: [
      tenantStorage(new StorageScopeStore(db, config.LLMHUB_TENANT_BUCKET_PREFIX), objects, storageAdmin),
    ],
    clusters: clustersOf(config.LLMHUB_CLUSTERS),
    podMetadataKeys: podMetadataKeysOf(config.LLMHUB_POD_METADATA_KEYS),
    mcpEgress: EgressPolicy.fromEnv(config.LLMHUB_MCP_EGRESS_ALLOW),
    tenantDefaults: {
      gpus: config.LLMHUB_TENANT_DEFAULT_GPUS,
      ceiling: tenantDefaultLimitOf(config.LLMHUB_TENANT_DEFAULT_LIMIT),
    },
  });
  await serveUntilStopped(app, config, logger, async () => {
    await connection.close();
    await db.end();
    await tracing?.shutdown();
  });
}

runRole(main);
