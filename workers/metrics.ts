import http from 'node:http';
import type { ActivityExecuteInput, ActivityInboundCallsInterceptor, Next } from '@temporalio/worker';
import { Context } from '@temporalio/activity';
import { collectDefaultMetrics, Counter, Histogram, Registry } from 'prom-client';
import { ingestionMetrics } from '../activities/knowledge/metrics';
import { rolloutMetrics } from '../activities/rollout/metrics';

export function createWorkerMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  for (const m of [...rolloutMetrics, ...ingestionMetrics]) registry.registerMetric(m);
  const activityDuration = new Histogram({
    name: 'llmhub_activity_duration_seconds',
    help: 'Activity attempt duration by activity type and outcome',
    labelNames: ['task_queue', 'activity_type', 'outcome'],
    buckets: [0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300],
    registers: [registry],
  });
  const activityAttempts = new Counter({
    name: 'llmhub_activity_attempts_total',
    help: 'Activity attempts by activity type and outcome',
    labelNames: ['task_queue', 'activity_type', 'outcome'],
    registers: [registry],
  });

  /** Counts and times every activity attempt, labelled by type and outcome. */
  class MetricsInterceptor implements ActivityInboundCallsInterceptor {
    async execute(
      input: ActivityExecuteInput,
      next: Next<ActivityInboundCallsInterceptor, 'execute'>,
    ): Promise<unknown> {
      const info = Context.current().info;
      const labels = { task_queue: info.taskQueue, activity_type: info.activityType };
      const end = activityDuration.startTimer(labels);
      try {
        const out = await next(input);
        end({ outcome: 'completed' });
        activityAttempts.inc({ ...labels, outcome: 'completed' });
        return out;
      } catch (err) {
        end({ outcome: 'failed' });
        activityAttempts.inc({ ...labels, outcome: 'failed' });
        throw err;
      }
    }
  }
  return { registry, activityInterceptor: () => ({ inbound: new MetricsInterceptor() }) };
}

/**
 * Serves `/metrics` for Prometheus; port 0 picks a free one (tests). `sdkMetricsUrl`: Core's exporter, whose text is
 * appended (its names all start with temporal_, so none collides); while it does not answer, only ours are served.
 */
export async function serveMetrics(
  registry: Registry,
  port: number,
  host = '127.0.0.1',
  sdkMetricsUrl?: string,
): Promise<http.Server> {
  const sdkMetrics = async (): Promise<string> => {
    if (!sdkMetricsUrl) return '';
    try {
      const res = await fetch(sdkMetricsUrl, { signal: AbortSignal.timeout(5_000) });
      return res.ok ? await res.text() : '';
    } catch {
      return '';
    }
  };
  const server = http.createServer(async (req, res) => {
    if (req.url !== '/metrics') {
      res.writeHead(404).end();
      return;
    }
    const [ours, sdk] = await Promise.all([registry.metrics(), sdkMetrics()]);
    res.writeHead(200, { 'content-type': registry.contentType }).end(ours + sdk);
  });
  await new Promise<void>((resolve) => server.listen(port, host, resolve));
  return server;
}
