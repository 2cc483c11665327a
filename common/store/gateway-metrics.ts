import type { Pool } from 'pg';

/**
 * Upper bounds (ms) of the persisted latency and TTFT histogram buckets; the last bucket is open (+Inf).
 * Fixed, so rows from every replica and every flush add up bucket by bucket.
 */
export const LATENCY_BUCKETS_MS = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000] as const;

/** One replica's counts for one (tenant, model, version) since its previous flush. */
export interface VersionMetricsRow {
  tenantId: string;
  modelId: string;
  version: string;
  requests: number;
  /** Failures the version is to blame for (upstream errors and timeouts), not the callers' 4xx. */
  errors: number;
  errorClasses: Record<string, number>;
  /** Counts per bucket of LATENCY_BUCKETS_MS, plus one for +Inf. */
  latencyBuckets: number[];
  ttftBuckets: number[];
  promptTokens: number;
  completionTokens: number;
  /** Milliseconds the requests spent in flight, summed: over a window, its average concurrency (autoscaling). */
  busyMs?: number;
}

/** A version's load over a window, from every replica's flushes: what the autoscaler scales on. */
export interface VersionLoad {
  requests: number;
  /** Average requests in flight over the window. */
  concurrency: number;
  tokensPerSecond: number;
  /** The newest flush that counted a request (epoch ms); null: none in the window. */
  lastRequestAt: number | null;
}

export interface VersionStats {
  requests: number;
  errors: number;
  /** 1 when there were no requests: no evidence against the version. */
  successRate: number;
  /** Interpolated within the bucket, as Prometheus' histogram_quantile does; null without requests. */
  p95LatencyMs: number | null;
  errorClasses: Record<string, number>;
}

export const bucketIndex = (ms: number): number => {
  const i = LATENCY_BUCKETS_MS.findIndex((b) => ms <= b);
  return i === -1 ? LATENCY_BUCKETS_MS.length : i;
};

/** The q-quantile of a histogram with LATENCY_BUCKETS_MS bounds; the open bucket answers its lower bound. */
export function quantileMs(buckets: number[], q: number): number | null {
  const total = buckets.reduce((a, b) => a + b, 0);
  if (total === 0) return null;
  const rank = q * total;
  let seen = 0;
  for (let i = 0; i < buckets.length; i++) {
    const n = buckets[i]!;
    if (n > 0 && seen + n >= rank) {
      const lower = i === 0 ? 0 : LATENCY_BUCKETS_MS[i - 1]!;
      const upper = LATENCY_BUCKETS_MS[i];
      if (upper === undefined) return lower;
      return lower + ((upper - lower) * (rank - seen)) / n;
    }
    seen += n;
  }
  return LATENCY_BUCKETS_MS[LATENCY_BUCKETS_MS.length - 1]!;
}

/** Per-version gateway metrics persisted by every replica, read back by the rollout analysis. */
export class GatewayMetricsStore {
  constructor(private readonly db: Pool) {}

  async insert(replica: string, at: number, rows: VersionMetricsRow[]): Promise<void> {
    if (rows.length === 0) return;
    const values: unknown[] = [];
    const tuples = rows.map((r, i) => {
      values.push(
        r.tenantId,
        r.modelId,
        r.version,
        r.requests,
        r.errors,
        JSON.stringify(r.errorClasses),
        r.latencyBuckets,
        r.ttftBuckets,
        r.promptTokens,
        r.completionTokens,
        r.busyMs ?? 0,
      );
      const o = i * 11 + 2;
      return `(to_timestamp($1 / 1000.0), $2, ${Array.from({ length: 11 }, (_, k) => `$${o + k + 1}`).join(', ')})`;
    });
    await this.db.query(
      `INSERT INTO gateway_metrics (at, replica, tenant_id, model_id, version, requests, errors, error_classes, latency_ms_buckets, ttft_ms_buckets, prompt_tokens, completion_tokens, busy_ms)
       VALUES ${tuples.join(', ')}`,
      [at, replica, ...values],
    );
  }

  /** Deletes every replica's flushes from before `beforeMs` (epoch ms); returns how many rows went. */
  async prune(beforeMs: number): Promise<number> {
    const { rowCount } = await this.db.query('DELETE FROM gateway_metrics WHERE at < to_timestamp($1 / 1000.0)', [
      beforeMs,
    ]);
    return rowCount ?? 0;
  }

  /** The version's load over the `windowMs` before `nowMs` (epoch ms), every replica's flushes together. */
  async versionLoad(
    tenantId: string,
    modelId: string,
    version: string,
    nowMs: number,
    windowMs: number,
  ): Promise<VersionLoad> {
    const { rows } = await this.db.query<{
      requests: string | null;
      busy_ms: number | null;
      tokens: string | null;
      last_ms: number | null;
    }>(
      `SELECT sum(requests) AS requests, sum(busy_ms) AS busy_ms, sum(prompt_tokens + completion_tokens) AS tokens,
         extract(epoch FROM max(at) FILTER (WHERE requests > 0)) * 1000 AS last_ms
       FROM gateway_metrics
       WHERE tenant_id = $1 AND model_id = $2 AND version = $3 AND at > to_timestamp($4 / 1000.0)`,
      [tenantId, modelId, version, nowMs - windowMs],
    );
    const r = rows[0]!;
    return {
      requests: Number(r.requests ?? 0),
      concurrency: Number(r.busy_ms ?? 0) / windowMs,
      tokensPerSecond: (Number(r.tokens ?? 0) * 1000) / windowMs,
      lastRequestAt: r.last_ms === null ? null : Math.round(Number(r.last_ms)),
    };
  }

  /**
   * Success rate and p95 latency of one version over every replica's flushes at or after `sinceMs` (epoch ms).
   * A replica flushes every few seconds (GATEWAY_METRICS_FLUSH_MS), so the newest requests may not be counted yet.
   */
  async versionStats(tenantId: string, modelId: string, version: string, sinceMs: number): Promise<VersionStats> {
    const { rows } = await this.db.query<{
      requests: string;
      errors: string;
      error_classes: Record<string, number>;
      latency_ms_buckets: string[];
    }>(
      `SELECT requests, errors, error_classes, latency_ms_buckets FROM gateway_metrics
       WHERE tenant_id = $1 AND model_id = $2 AND version = $3 AND at >= to_timestamp($4 / 1000.0)`,
      [tenantId, modelId, version, sinceMs],
    );
    const latency = new Array<number>(LATENCY_BUCKETS_MS.length + 1).fill(0);
    const errorClasses: Record<string, number> = {};
    let requests = 0;
    let errors = 0;
    for (const r of rows) {
      requests += Number(r.requests);
      errors += Number(r.errors);
      r.latency_ms_buckets.forEach((n, i) => (latency[i]! += Number(n)));
      for (const [k, n] of Object.entries(r.error_classes)) errorClasses[k] = (errorClasses[k] ?? 0) + n;
    }
    return {
      requests,
      errors,
      successRate: requests === 0 ? 1 : (requests - errors) / requests,
      p95LatencyMs: quantileMs(latency, 0.95),
      errorClasses,
    };
  }
}
