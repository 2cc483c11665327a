import { hostname } from 'node:os';
import { collectDefaultMetrics, Registry } from 'prom-client';
import type { Logger } from '../../common/logger';
import type { AuditStore } from '../../common/store/audit';
import {
  bucketIndex,
  LATENCY_BUCKETS_MS,
  type GatewayMetricsStore,
  type VersionMetricsRow,
} from '../../common/store/gateway-metrics';
import type { LimitStore } from '../../common/store/limits';
import type { LimitScope } from './limiter';
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
  /** The usage's cost in micro-units of `currency`, when the version has a price. */
  costMicros?: number;
  currency?: string;
}

const LE = [...LATENCY_BUCKETS_MS.map((ms) => String(ms / 1000)), '+Inf'];

interface Histo {
  /** Per bucket of LATENCY_BUCKETS_MS (+Inf last), not cumulative. */
  buckets: number[];
  sumSeconds: number;
}

/** Cumulative Prometheus figures of one (tenant, model, version), with its label set rendered once. */
interface Series {
  labels: string;
  requests: Map<number, number>;
  errors: Map<string, number>;
  /** Requests refused by a limit before any upstream call, by the limit's scope. */
  limited: Map<LimitScope, number>;
  latency: Histo;
  ttft?: Histo;
  promptTokens: number;
  completionTokens: number;
  /** Micro-units by currency. */
  cost?: Map<string, number>;
}

const newHisto = (): Histo => ({ buckets: new Array<number>(LE.length).fill(0), sumSeconds: 0 });
const escapeLabel = (v: string) => v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');

const PRUNE_EVERY_MS = 3_600_000;
/** Ended limit windows are kept this long, so an operator looking into a 429 still finds the window. */
const ENDED_WINDOW_GRACE_MS = 3_600_000;

/**
 * Per (tenant, model, version) metrics, twice: on this replica's `/metrics` (Prometheus text), and as counts +
 * fixed histogram buckets flushed to PostgreSQL every `flushMs`, where the rollout analysis reads all replicas
 * together. Usage per tenant/project/model/version/caller is batched into the same flush. The per-request series
 * are plain counters rendered at scrape time: prom-client hashes and validates the label set on every observation,
 * which was a measurable share of a request's CPU; its registry still serves the process metrics.
 */
export class GatewayMeter {
  readonly registry = new Registry();
  private readonly replica = `${hostname()}:${process.pid}:${Math.random().toString(36).slice(2, 8)}`;
  private pending = new Map<string, VersionMetricsRow>();
  private usage = new Map<string, UsageRow>();
  private readonly timer: NodeJS.Timeout;
  private flushing: Promise<void> = Promise.resolve();
  private readonly series = new Map<string, Series>();
  private prunedAt = 0;
  private pruning: Promise<void> = Promise.resolve();

  constructor(
    private readonly deps: {
      metrics: GatewayMetricsStore;
      usage: UsageStore;
      limits: Pick<LimitStore, 'pruneEndedWindows'>;
      flushMs: number;
      retentionMs: number;
      /** Told of each batch of usage once it is stored (the budget alerts are decided from it). */
      onUsageStored?: (rows: UsageRow[]) => Promise<void>;
      /** The audit log's retention is applied by the same hourly pass. */
      audit: Pick<AuditStore, 'prune'>;
      auditRetentionMs: number;
      logger: Pick<Logger, 'warn' | 'error'>;
    },
  ) {
    collectDefaultMetrics({ register: this.registry });
    this.timer = setInterval(() => void this.flush(), deps.flushMs);
    this.timer.unref();
  }

  /** The Prometheus exposition: process metrics, then the gateway's series. */
  async metrics(): Promise<string> {
    const out = [await this.registry.metrics()];
    const all = [...this.series.values()];
    const head = (name: string, type: string, help: string) =>
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    head('llmhub_gateway_requests_total', 'counter', 'Inference requests by model version and HTTP status');
    for (const s of all)
      for (const [status, n] of s.requests)
        out.push(`llmhub_gateway_requests_total{${s.labels},status="${status}"} ${n}`);
    head('llmhub_gateway_errors_total', 'counter', 'Requests the model version failed, by error class');
    for (const s of all)
      for (const [cls, n] of s.errors)
        out.push(`llmhub_gateway_errors_total{${s.labels},class="${escapeLabel(cls)}"} ${n}`);
    head('llmhub_gateway_rate_limited_total', 'counter', 'Requests refused (429) by a limit, by its scope');
    for (const s of all)
      for (const [scope, n] of s.limited)
        out.push(`llmhub_gateway_rate_limited_total{${s.labels},limit="${scope}"} ${n}`);
    const histogram = (name: string, help: string, of: (s: Series) => Histo | undefined) => {
      head(name, 'histogram', help);
      for (const s of all) {
        const h = of(s);
        if (!h) continue;
        let cumulative = 0;
        h.buckets.forEach((n, i) => out.push(`${name}_bucket{${s.labels},le="${LE[i]}"} ${(cumulative += n)}`));
        out.push(`${name}_sum{${s.labels}} ${h.sumSeconds}`, `${name}_count{${s.labels}} ${cumulative}`);
      }
    };
    histogram('llmhub_gateway_request_duration_seconds', 'Time to the last byte of the answer', (s) => s.latency);
    histogram('llmhub_gateway_time_to_first_token_seconds', 'Time to the first streamed chunk', (s) => s.ttft);
    head('llmhub_gateway_tokens_total', 'counter', 'Tokens metered, by kind');
    for (const s of all) {
      if (s.promptTokens) out.push(`llmhub_gateway_tokens_total{${s.labels},kind="prompt"} ${s.promptTokens}`);
      if (s.completionTokens)
        out.push(`llmhub_gateway_tokens_total{${s.labels},kind="completion"} ${s.completionTokens}`);
    }
    head('llmhub_gateway_cost_total', 'counter', 'Cost of the metered tokens at the prices in effect, by currency');
    for (const s of all)
      for (const [currency, micros] of s.cost ?? [])
        out.push(`llmhub_gateway_cost_total{${s.labels},currency="${escapeLabel(currency)}"} ${micros / 1e6}`);
    return `${out.join('\n')}\n`;
  }

  /** Metrics and usage of a finished request. */
  record(o: Outcome): void {
    this.observe(o);
    const u = this.usageOf(o, Math.floor(Date.now() / 60_000) * 60_000);
    u.requests++;
    u.promptTokens += o.promptTokens;
    u.completionTokens += o.completionTokens;
  }

  /** Metrics only: for an attempt that failed over to another version, whose usage is the other's. */
  observe(o: Outcome): void {
    const latencyBucket = bucketIndex(o.latencyMs);
    const ttftBucket = o.ttftMs === undefined ? -1 : bucketIndex(o.ttftMs);
    const series = this.seriesOf(o);
    series.requests.set(o.status, (series.requests.get(o.status) ?? 0) + 1);
    if (o.errorClass) series.errors.set(o.errorClass, (series.errors.get(o.errorClass) ?? 0) + 1);
    series.latency.buckets[latencyBucket]!++;
    series.latency.sumSeconds += o.latencyMs / 1000;
    if (o.ttftMs !== undefined) {
      series.ttft ??= newHisto();
      series.ttft.buckets[ttftBucket]!++;
      series.ttft.sumSeconds += o.ttftMs / 1000;
    }
    series.promptTokens += o.promptTokens;
    series.completionTokens += o.completionTokens;
    if (o.currency) {
      series.cost ??= new Map();
      series.cost.set(o.currency, (series.cost.get(o.currency) ?? 0) + (o.costMicros ?? 0));
    }

    const row = this.rowOf(o);
    row.requests++;
    if (o.errorClass) {
      row.errors++;
      row.errorClasses[o.errorClass] = (row.errorClasses[o.errorClass] ?? 0) + 1;
    }
    row.latencyBuckets[latencyBucket]!++;
    row.busyMs = (row.busyMs ?? 0) + o.latencyMs;
    if (o.ttftMs !== undefined) row.ttftBuckets[ttftBucket]!++;
    row.promptTokens += o.promptTokens;
    row.completionTokens += o.completionTokens;
  }

  /** A request a limit refused, counted against the version it would have gone to (no usage, no latency). */
  limited(v: Pick<Outcome, 'tenantId' | 'modelId' | 'version'>, scope: LimitScope): void {
    const series = this.seriesOf(v);
    series.limited.set(scope, (series.limited.get(scope) ?? 0) + 1);
  }

  private seriesOf(o: Pick<Outcome, 'tenantId' | 'modelId' | 'version'>): Series {
    const key = `${o.tenantId}\0${o.modelId}\0${o.version}`;
    let series = this.series.get(key);
    if (!series) {
      series = {
        labels: `tenant="${escapeLabel(o.tenantId)}",model="${escapeLabel(o.modelId)}",version="${escapeLabel(o.version)}"`,
        requests: new Map(),
        errors: new Map(),
        limited: new Map(),
        latency: newHisto(),
        promptTokens: 0,
        completionTokens: 0,
      };
      this.series.set(key, series);
    }
    return series;
  }

  private rowOf(k: { tenantId: string; modelId: string; version: string }): VersionMetricsRow {
    const key = `${k.tenantId}\0${k.modelId}\0${k.version}`;
    let row = this.pending.get(key);
    if (!row) {
      const empty = () => new Array<number>(LATENCY_BUCKETS_MS.length + 1).fill(0);
      row = {
        tenantId: k.tenantId,
        modelId: k.modelId,
        version: k.version,
        requests: 0,
        errors: 0,
        errorClasses: {},
        latencyBuckets: empty(),
        ttftBuckets: empty(),
        promptTokens: 0,
        completionTokens: 0,
      };
      this.pending.set(key, row);
    }
    return row;
  }

  private usageOf(
    k: Pick<UsageRow, 'tenantId' | 'projectId' | 'modelId' | 'version' | 'subject'>,
    minute: number,
  ): UsageRow {
    const key = `${k.tenantId}\0${k.projectId}\0${k.modelId}\0${k.version}\0${k.subject}\0${minute}`;
    let u = this.usage.get(key);
    if (!u) {
      u = {
        tenantId: k.tenantId,
        projectId: k.projectId,
        modelId: k.modelId,
        version: k.version,
        subject: k.subject,
        minute,
        requests: 0,
        promptTokens: 0,
        completionTokens: 0,
      };
      this.usage.set(key, u);
    }
    return u;
  }

  /** Writes what was recorded since the last flush; a failed write is merged back and retried next time. */
  flush(): Promise<void> {
    this.pruneWhenDue();
    this.flushing = this.flushing.then(async () => {
      const rows = [...this.pending.values()];
      const usage = [...this.usage.values()];
      if (rows.length === 0 && usage.length === 0) return;
      this.pending = new Map();
      this.usage = new Map();
      try {
        await Promise.all([this.deps.metrics.insert(this.replica, Date.now(), rows), this.deps.usage.add(usage)]);
      } catch (err) {
        this.deps.logger.warn(
          { err, rows: rows.length, usage: usage.length },
          'gateway metrics flush failed; will retry',
        );
        this.requeue(rows, usage);
        return;
      }
      if (usage.length) await this.deps.onUsageStored?.(usage);
    });
    return this.flushing;
  }

  /** Every replica prunes, at most once per PRUNE_EVERY_MS; deletes from several replicas at once are harmless. */
  private pruneWhenDue(): void {
    const now = Date.now();
    if (now - this.prunedAt < PRUNE_EVERY_MS) return;
    this.prunedAt = now;
    // Beside the flush chain, not in it: a slow delete on a big table must not hold back the next flushes.
    this.pruning = Promise.all([
      this.deps.metrics.prune(now - this.deps.retentionMs),
      this.deps.limits.pruneEndedWindows(now - ENDED_WINDOW_GRACE_MS),
      this.deps.audit.prune(now - this.deps.auditRetentionMs),
    ]).then(
      () => undefined,
      (err: unknown) => this.deps.logger.warn({ err }, 'gateway retention delete failed; will retry within the hour'),
    );
  }

  private requeue(rows: VersionMetricsRow[], usage: UsageRow[]): void {
    for (const r of rows) {
      const cur = this.rowOf(r);
      cur.requests += r.requests;
      cur.errors += r.errors;
      for (const [k, n] of Object.entries(r.errorClasses)) cur.errorClasses[k] = (cur.errorClasses[k] ?? 0) + n;
      r.latencyBuckets.forEach((n, i) => (cur.latencyBuckets[i]! += n));
      r.ttftBuckets.forEach((n, i) => (cur.ttftBuckets[i]! += n));
      cur.busyMs = (cur.busyMs ?? 0) + (r.busyMs ?? 0);
      cur.promptTokens += r.promptTokens;
      cur.completionTokens += r.completionTokens;
    }
    for (const u of usage) {
      const cur = this.usageOf(u, u.minute);
      cur.requests += u.requests;
      cur.promptTokens += u.promptTokens;
      cur.completionTokens += u.completionTokens;
    }
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.flush();
    await this.pruning;
  }
}
