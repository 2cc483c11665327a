import { hostname } from 'node:os';
import { collectDefaultMetrics, Counter, Histogram, Registry } from 'prom-client';
import type { Logger } from '../../common/logger';
import { bucketIndex, LATENCY_BUCKETS_MS, type GatewayMetricsStore, type VersionMetricsRow } from '../../common/store/gateway-metrics';
import type { UsageRow, UsageStore } from '../../common/store/usage';

export interface Outcome {
  tenantId: string;
  projectId: string;
  subject: string;
  modelId: string;
  version: string;
  status: number;
  /** Set when the version failed the request (upstream error, timeout, broken stream). */
  errorClass?: string;
  latencyMs: number;
  ttftMs?: number;
  promptTokens: number;
  completionTokens: number;
}

const seconds = LATENCY_BUCKETS_MS.map((ms) => ms / 1000);

/**
 * Per (tenant, model, version) metrics, twice: on this replica's Prometheus registry (`/metrics`), and as
 * counts + fixed histogram buckets flushed to PostgreSQL every `flushMs`, where the rollout analysis reads all
 * replicas together. Usage per tenant/project/model/version/caller is batched into the same flush.
 */
export class GatewayMeter {
  readonly registry = new Registry();
  private readonly replica = `${hostname()}:${process.pid}:${Math.random().toString(36).slice(2, 8)}`;
  private pending = new Map<string, VersionMetricsRow>();
  private usage = new Map<string, UsageRow>();
  private readonly timer: NodeJS.Timeout;
  private flushing: Promise<void> = Promise.resolve();
  private readonly requests: Counter;
  private readonly errors: Counter;
  private readonly latency: Histogram;
  private readonly ttft: Histogram;
  private readonly tokens: Counter;

  constructor(private readonly deps: { metrics: GatewayMetricsStore; usage: UsageStore; flushMs: number; logger: Pick<Logger, 'warn' | 'error'> }) {
    collectDefaultMetrics({ register: this.registry });
    const labelNames = ['tenant', 'model', 'version'] as const;
    const registers = [this.registry];
    this.requests = new Counter({ name: 'llmhub_gateway_requests_total', help: 'Inference requests by model version and HTTP status', labelNames: [...labelNames, 'status'], registers });
    this.errors = new Counter({ name: 'llmhub_gateway_errors_total', help: 'Requests the model version failed, by error class', labelNames: [...labelNames, 'class'], registers });
    this.latency = new Histogram({ name: 'llmhub_gateway_request_duration_seconds', help: 'Time to the last byte of the answer', labelNames, buckets: seconds, registers });
    this.ttft = new Histogram({ name: 'llmhub_gateway_time_to_first_token_seconds', help: 'Time to the first streamed chunk', labelNames, buckets: seconds, registers });
    this.tokens = new Counter({ name: 'llmhub_gateway_tokens_total', help: 'Tokens metered, by kind', labelNames: [...labelNames, 'kind'], registers });
    this.timer = setInterval(() => void this.flush(), deps.flushMs);
    this.timer.unref();
  }

  /** Metrics and usage of a finished request. */
  record(o: Outcome): void {
    this.observe(o);
    const u = this.usageOf({ ...o, minute: Math.floor(Date.now() / 60_000) * 60_000 });
    u.requests++;
    u.promptTokens += o.promptTokens;
    u.completionTokens += o.completionTokens;
  }

  /** Metrics only: for an attempt that failed over to another version, whose usage is the other's. */
  observe(o: Outcome): void {
    const labels = { tenant: o.tenantId, model: o.modelId, version: o.version };
    this.requests.inc({ ...labels, status: String(o.status) });
    if (o.errorClass) this.errors.inc({ ...labels, class: o.errorClass });
    this.latency.observe(labels, o.latencyMs / 1000);
    if (o.ttftMs !== undefined) this.ttft.observe(labels, o.ttftMs / 1000);
    if (o.promptTokens) this.tokens.inc({ ...labels, kind: 'prompt' }, o.promptTokens);
    if (o.completionTokens) this.tokens.inc({ ...labels, kind: 'completion' }, o.completionTokens);

    const row = this.rowOf(o);
    row.requests++;
    if (o.errorClass) {
      row.errors++;
      row.errorClasses[o.errorClass] = (row.errorClasses[o.errorClass] ?? 0) + 1;
    }
    row.latencyBuckets[bucketIndex(o.latencyMs)]!++;
    if (o.ttftMs !== undefined) row.ttftBuckets[bucketIndex(o.ttftMs)]!++;
    row.promptTokens += o.promptTokens;
    row.completionTokens += o.completionTokens;
  }

  private rowOf(k: { tenantId: string; modelId: string; version: string }): VersionMetricsRow {
    const key = `${k.tenantId}\0${k.modelId}\0${k.version}`;
    let row = this.pending.get(key);
    if (!row) {
      const empty = () => new Array<number>(LATENCY_BUCKETS_MS.length + 1).fill(0);
      row = { tenantId: k.tenantId, modelId: k.modelId, version: k.version, requests: 0, errors: 0, errorClasses: {}, latencyBuckets: empty(), ttftBuckets: empty(), promptTokens: 0, completionTokens: 0 };
      this.pending.set(key, row);
    }
    return row;
  }

  private usageOf(k: Omit<UsageRow, 'requests' | 'promptTokens' | 'completionTokens'>): UsageRow {
    const key = `${k.tenantId}\0${k.projectId}\0${k.modelId}\0${k.version}\0${k.subject}\0${k.minute}`;
    let u = this.usage.get(key);
    if (!u) {
      u = { tenantId: k.tenantId, projectId: k.projectId, modelId: k.modelId, version: k.version, subject: k.subject, minute: k.minute, requests: 0, promptTokens: 0, completionTokens: 0 };
      this.usage.set(key, u);
    }
    return u;
  }

  /** Writes what was recorded since the last flush; a failed write is merged back and retried next time. */
  flush(): Promise<void> {
    this.flushing = this.flushing.then(async () => {
      const rows = [...this.pending.values()];
      const usage = [...this.usage.values()];
      if (rows.length === 0 && usage.length === 0) return;
      this.pending = new Map();
      this.usage = new Map();
      try {
        await Promise.all([this.deps.metrics.insert(this.replica, Date.now(), rows), this.deps.usage.add(usage)]);
      } catch (err) {
        this.deps.logger.warn({ err, rows: rows.length, usage: usage.length }, 'gateway metrics flush failed; will retry');
        this.requeue(rows, usage);
      }
    });
    return this.flushing;
  }

  private requeue(rows: VersionMetricsRow[], usage: UsageRow[]): void {
    for (const r of rows) {
      const cur = this.rowOf(r);
      cur.requests += r.requests;
      cur.errors += r.errors;
      for (const [k, n] of Object.entries(r.errorClasses)) cur.errorClasses[k] = (cur.errorClasses[k] ?? 0) + n;
      r.latencyBuckets.forEach((n, i) => (cur.latencyBuckets[i]! += n));
      r.ttftBuckets.forEach((n, i) => (cur.ttftBuckets[i]! += n));
      cur.promptTokens += r.promptTokens;
      cur.completionTokens += r.completionTokens;
    }
    for (const u of usage) {
      const cur = this.usageOf(u);
      cur.requests += u.requests;
      cur.promptTokens += u.promptTokens;
      cur.completionTokens += u.completionTokens;
    }
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.flush();
  }
}
