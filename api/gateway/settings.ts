import { Type, type Static } from '@sinclair/typebox';
import { ConfigError, parseEnv } from '../../common/config';

/** The gateway's knobs; each reads from `GATEWAY_<NAME>` (e.g. refreshMs from GATEWAY_REFRESH_MS). */
const Settings = Type.Object({
  bodyLimitBytes: Type.Integer({ default: 8 * 1024 * 1024, minimum: 1024 }),
  /** Per model server; a stream holds one for its whole length, so this bounds concurrent streams before they queue. */
  upstreamConnections: Type.Integer({ default: 4096, minimum: 1 }),
  connectTimeoutMs: Type.Integer({ default: 5_000, minimum: 1 }),
  /** Until the upstream's response headers arrive. */
  firstByteTimeoutMs: Type.Integer({ default: 120_000, minimum: 1 }),
  /** Silence allowed between two body chunks (streamed tokens). */
  idleTimeoutMs: Type.Integer({ default: 60_000, minimum: 1 }),
  /** Routes, weights, projects and limits are re-read at least this often, even when a notification is lost. */
  refreshMs: Type.Integer({ default: 5_000, minimum: 50 }),
  /** How long a verified (or refused) API key is trusted before it is checked again. */
  keyCacheTtlMs: Type.Integer({ default: 5_000, minimum: 0 }),
  metricsFlushMs: Type.Integer({ default: 5_000, minimum: 50 }),
  /** Flushed per-version metrics older than this are deleted; keep it longer than any rollout's analysis window. */
  metricsRetentionMs: Type.Integer({ default: 7 * 24 * 3_600_000, minimum: 60_000 }),
  /** Audit rows of inference calls and streams are written in batches this often (and at shutdown). */
  auditFlushMs: Type.Integer({ default: 1_000, minimum: 10 }),
  requestSlice: Type.Integer({ default: 20, minimum: 1 }),
  tokenSlice: Type.Integer({ default: 20_000, minimum: 1 }),
  /** A budget's first slice, in micro-units of its currency (10,000: 0.01). */
  budgetSlice: Type.Integer({ default: 10_000, minimum: 1 }),
  /** Budget alerts due for delivery are looked for this often. */
  alertPollMs: Type.Integer({ default: 2_000, minimum: 10 }),
  /** The first retry of a failed alert delivery waits this long; each next one twice as long (at most an hour). */
  alertRetryMs: Type.Integer({ default: 10_000, minimum: 10 }),
  /** A replica hands back the unused part of a slice it has not touched for this long. */
  leaseIdleMs: Type.Integer({ default: 10_000, minimum: 10 }),
  /** Reserved for a request that names no max_tokens. */
  defaultMaxTokens: Type.Integer({ default: 1024, minimum: 1 }),
  breakerFailures: Type.Integer({ default: 5, minimum: 1 }),
  breakerCooldownMs: Type.Integer({ default: 5_000, minimum: 1 }),
  /** Requests a replica holds per version while the version starts from nothing running; past it, 503 + Retry-After. */
  coldQueue: Type.Integer({ default: 100, minimum: 0 }),
  /** How long a held request waits for its version to start; past it, 503 + Retry-After. */
  coldWaitMs: Type.Integer({ default: 120_000, minimum: 1 }),
});
export type GatewaySettings = Static<typeof Settings>;

const envName = (key: string) => `GATEWAY_${key.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`;

export function loadGatewaySettings(
  env: NodeJS.ProcessEnv = process.env,
  overrides: Partial<GatewaySettings> = {},
): GatewaySettings {
  const raw = Object.fromEntries(Object.keys(Settings.properties).map((k) => [k, env[envName(k)]]));
  try {
    return { ...parseEnv(Settings, raw), ...overrides };
  } catch (err) {
    if (err instanceof ConfigError)
      throw new ConfigError(
        err.message.replace(/^( +)(\w+):/gm, (_, pad: string, k: string) => `${pad}${envName(k)}:`),
      );
    throw err;
  }
}
