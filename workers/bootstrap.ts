import {
  DefaultLogger,
  NativeConnection,
  Runtime,
  Worker,
  type LogLevel,
  type WorkerOptions,
} from '@temporalio/worker';
import { randomInt } from 'node:crypto';
import type { Pool } from 'pg';
import type { Logger } from '../common/logger';
import { describeTemporalTarget, type TemporalConnectionOptions } from '../common/temporal-connection';
import { tracingWorkerOptions } from '../common/temporal-tracing';
import type { Tracing } from '../common/tracing';
import { createWorkerMetrics, serveMetrics } from './metrics';
import { registerPlatformGauges } from './platform-gauges';

export class TemporalUnreachableError extends Error {}

/** Core's metrics exporter binds a random loopback port: one another process holds only costs another try. */
const SDK_METRICS_TRIES = 20;

/**
 * Routes the SDK's own logs (which carry workflowId/runId/activity attributes) into the service's pino logger. With
 * `sdkMetrics`, Core also exports the SDK's own metrics (workflow and activity latencies, schedule-to-start, failures,
 * task slots) on loopback; the answer is their URL, which the worker's /metrics appends, so one scrape gets both.
 */
export function installRuntimeLogger(logger: Logger, opts: { sdkMetrics?: boolean } = {}): string | undefined {
  const sdkLogger = new DefaultLogger(logger.level.toUpperCase() as LogLevel, (entry) => {
    const level = entry.level.toLowerCase() as 'trace' | 'debug' | 'info' | 'warn' | 'error';
    logger[level]({ ...entry.meta, sdkTimeNanos: String(entry.timestampNanos) }, entry.message);
  });
  if (!opts.sdkMetrics) {
    Runtime.install({ logger: sdkLogger });
    return undefined;
  }
  for (let attempt = 1; ; attempt++) {
    const bindAddress = `127.0.0.1:${randomInt(20_000, 60_000)}`;
    try {
      Runtime.install({
        logger: sdkLogger,
        // Prometheus's conventions: counters end in _total, durations are in seconds and say so.
        telemetryOptions: {
          metrics: {
            prometheus: { bindAddress, countersTotalSuffix: true, unitSuffix: true, useSecondsForDurations: true },
          },
        },
      });
      return `http://${bindAddress}/metrics`;
    } catch (err) {
      if (attempt === SDK_METRICS_TRIES || !/address already in use/i.test((err as Error).message)) throw err;
    }
  }
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
  /** Core's own metrics (installRuntimeLogger's answer), appended to /metrics. */
  sdkMetricsUrl?: string;
  /** The platform's database: its GPU quotas and queues are exported as gauges (with Temporal's reachability and the rollouts by phase). */
  db?: Pool;
  shutdownGraceMs?: number;
  handleSignals?: boolean;
  /** The process's tracer provider (common/tracing.ts); workflows and activities are spans of their starter's trace. */
  tracing?: Tracing;
}): Promise<RunningWorker> {
  const metrics = createWorkerMetrics();
  if (opts.db)
    registerPlatformGauges(metrics.registry, {
      db: opts.db,
      connection: opts.connection,
      namespace: opts.namespace,
      logger: opts.logger,
    });
  const traced = tracingWorkerOptions(opts.tracing);
  const worker = await Worker.create({
    connection: opts.connection,
    namespace: opts.namespace,
    taskQueue: opts.taskQueue,
    activities: opts.activities,
    ...opts.workflows,
    interceptors: {
      activity: [metrics.activityInterceptor, ...traced.activity],
      workflowModules: traced.workflowModules,
    },
    sinks: traced.sinks,
    shutdownGraceTime: opts.shutdownGraceMs ?? 30_000,
    // Tests run several workers in one process and stop them themselves.
    ...(opts.handleSignals === false ? { shutdownSignals: [] } : {}),
  });
  const server =
    opts.metricsPort === undefined
      ? undefined
      : await serveMetrics(metrics.registry, opts.metricsPort, opts.metricsHost, opts.sdkMetricsUrl);
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
