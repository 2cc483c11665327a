import { createPlatformActivities, type PlatformActivityDeps } from '../activities';
import { loadConfig } from '../common/config';
import { createLogger } from '../common/logger';
import { createPool } from '../common/store/pool';
import { temporalConnectionOptions } from '../common/temporal-connection';
import { connectTemporal, installRuntimeLogger, startWorker } from './bootstrap';
import { platformActivityDeps } from './platform-deps';

/**
 * Runs the platform task queue's worker process until it is told to stop; `overrides` replace parts of the
 * activities' deps (the dev stack's worker adds its local process runtime). Entry points: roles/worker.ts, deploy/dev/worker.ts.
 */
export function runPlatformWorker(overrides: Partial<PlatformActivityDeps> = {}): void {
  run(overrides).catch((err) => {
    console.error(err instanceof Error ? err.message : err);
    process.exit(1);
  });
}

async function run(overrides: Partial<PlatformActivityDeps>): Promise<void> {
  const config = loadConfig();
  const logger = createLogger('llmhub-worker', config.LOG_LEVEL);
  installRuntimeLogger(logger);
  const db = createPool(config.DATABASE_URL, config.DATABASE_POOL_MAX);
  const connection = await connectTemporal(temporalConnectionOptions(config), logger);
  const running = await startWorker({
    connection,
    namespace: config.TEMPORAL_NAMESPACE,
    taskQueue: config.TEMPORAL_TASK_QUEUE,
    activities: createPlatformActivities(await platformActivityDeps(config, db, overrides)),
    workflows: process.env.LLMHUB_WORKFLOW_BUNDLE
      ? { workflowBundle: { codePath: process.env.LLMHUB_WORKFLOW_BUNDLE } }
      : { workflowsPath: require.resolve('../workflows') },
    logger,
    metricsPort: config.WORKER_METRICS_PORT,
    metricsHost: config.WORKER_METRICS_HOST,
    shutdownGraceMs: config.WORKER_SHUTDOWN_GRACE_MS,
  });
  await running.done;
  await connection.close();
  await db.end();
}
