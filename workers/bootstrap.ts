import {
  DefaultLogger,
  NativeConnection,
  Runtime,
  Worker,
  type LogLevel,
  type WorkerOptions,
} from '@temporalio/worker';
import type { Logger } from '../common/logger';
import { describeTemporalTarget, type TemporalConnectionOptions } from '../common/temporal-connection';
import { createWorkerMetrics, serveMetrics } from './metrics';

export class TemporalUnreachableError extends Error {}

/** Routes the SDK's own logs (which carry workflowId/runId/activity attributes) into the service's pino logger. */
export function installRuntimeLogger(logger: Logger): void {
  Runtime.install({
    logger: new DefaultLogger(logger.level.toUpperCase() as LogLevel, (entry) => {
      const level = entry.level.toLowerCase() as 'trace' | 'debug' | 'info' | 'warn' | 'error';
      logger[level]({ ...entry.meta, sdkTimeNanos: String(entry.timestampNanos) }, entry.message);
    }),
  });
}

export async function connectTemporal(options: TemporalConnectionOptions, logger: Logger): Promise<NativeConnection> {
  try {
    return await NativeConnection.connect(options);
  } catch (err) {
    const target = describeTemporalTarget(options);
    logger.error({ err, target }, 'cannot reach Temporal');
    throw new TemporalUnreachableError(
      `cannot reach the Temporal server at ${target} (set TEMPORAL_ADDRESS, TEMPORAL_TLS_*, TEMPORAL_API_KEY; for local use run \`npm run dev\`): ${(err as Error).message}`,
    );
  }
}

export interface RunningWorker {
  worker: Worker;
  metricsPort: number | undefined;
  /** Resolves when the worker has stopped (after a signal or `shutdown()`). */
  done: Promise<void>;
  shutdown(): Promise<void>;
}

/**
 * Shared bootstrap for every task queue: one connection, activity metrics on `/metrics`, and graceful shutdown:
 * on SIGTERM/SIGINT the worker stops polling, lets in-flight activities finish within `shutdownGraceTime`
 * (they are cancelled after that and heartbeat-resumed elsewhere), then closes the connection.
 */
export async function startWorker(opts: {
  connection: NativeConnection;
  namespace: string;
  taskQueue: string;
  activities: object;
  workflows: Pick<WorkerOptions, 'workflowsPath' | 'workflowBundle'>;
  logger: Logger;
  metricsPort?: number;
  metricsHost?: string;
  shutdownGraceMs?: number;
  handleSignals?: boolean;
}): Promise<RunningWorker> {
  const metrics = createWorkerMetrics();
  const worker = await Worker.create({
    connection: opts.connection,
    namespace: opts.namespace,
    taskQueue: opts.taskQueue,
    activities: opts.activities,
    ...opts.workflows,
    interceptors: { activity: [metrics.activityInterceptor] },
    shutdownGraceTime: opts.shutdownGraceMs ?? 30_000,
    // Tests run several workers in one process and stop them themselves.
    ...(opts.handleSignals === false ? { shutdownSignals: [] } : {}),
  });
  const server =
    opts.metricsPort === undefined
      ? undefined
      : await serveMetrics(metrics.registry, opts.metricsPort, opts.metricsHost);
  const metricsPort = server ? (server.address() as { port: number }).port : undefined;
  opts.logger.info({ taskQueue: opts.taskQueue, namespace: opts.namespace, metricsPort }, 'worker started');
  const done = worker.run().finally(() => {
    server?.close();
    opts.logger.info({ taskQueue: opts.taskQueue }, 'worker stopped');
  });
  return {
    worker,
    metricsPort,
    done,
    async shutdown() {
      if (worker.getState() === 'RUNNING') worker.shutdown();
      await done;
    },
  };
}
