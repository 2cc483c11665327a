import { isIP } from 'node:net';
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { DEFAULT_GPU_QUOTA } from '../contracts/fine-tune';
import { Value } from '@sinclair/typebox/value';
import { PartialResources, toCores } from './resources';

/**
 * Configuration comes from the environment only, validated once at start so a typo fails fast with
 * the variable's name rather than as a confusing error deep inside a request.
 */
const DEFAULT_CLUSTERS = '{"local":{}}';
const DEFAULT_TENANT_LIMIT = '{"windowSeconds":60,"maxRequests":600,"maxTokens":1000000}';
export const DEFAULT_TENANT_BUCKET_PREFIX = 'llmhub-t-';

const Env = Type.Object({
  TEMPORAL_ADDRESS: Type.String({ default: '127.0.0.1:7233', minLength: 1 }),
  TEMPORAL_NAMESPACE: Type.String({ default: 'default', minLength: 1 }),
  TEMPORAL_TASK_QUEUE: Type.String({ default: 'llmhub-platform', minLength: 1 }),
  /** Unset: TLS when any TEMPORAL_TLS_* setting or an API key is given; false with any of them is refused. */
  TEMPORAL_TLS: Type.Optional(Type.Boolean()),
  /** PEM of the CA that signed the Temporal frontend's certificate; unset: the system's trusted roots. */
  TEMPORAL_TLS_CA_FILE: Type.Optional(Type.String({ minLength: 1 })),
  /** PEM client certificate and its private key, for a cluster or namespace that requires mTLS; one needs the other. */
  TEMPORAL_TLS_CERT_FILE: Type.Optional(Type.String({ minLength: 1 })),
  TEMPORAL_TLS_KEY_FILE: Type.Optional(Type.String({ minLength: 1 })),
  /** The name the frontend's certificate is checked against (and sent as SNI) instead of TEMPORAL_ADDRESS's host. */
  TEMPORAL_TLS_SERVER_NAME: Type.Optional(Type.String({ minLength: 1 })),
  /** A Temporal Cloud API key, sent as `Authorization: Bearer`. */
  TEMPORAL_API_KEY: Type.Optional(Type.String({ minLength: 1 })),
  DATABASE_URL: Type.String({ pattern: '^postgres(ql)?://' }),
  DATABASE_POOL_MAX: Type.Integer({ default: 10, minimum: 1 }),
  S3_ENDPOINT: Type.Optional(Type.String({ pattern: '^https?://' })),
  S3_REGION: Type.String({ default: 'us-east-1' }),
  S3_ACCESS_KEY_ID: Type.Optional(Type.String()),
  S3_SECRET_ACCESS_KEY: Type.Optional(Type.String()),
  S3_FORCE_PATH_STYLE: Type.Boolean({ default: true }),
  API_HOST: Type.String({ default: '127.0.0.1' }),
  API_PORT: Type.Integer({ default: 8080, minimum: 0, maximum: 65535 }),
  API_BODY_LIMIT_BYTES: Type.Integer({ default: 1048576, minimum: 1024 }),
  /** How long a client may take to send a whole request, headers and body (408 beyond); answers are not timed. */
  API_REQUEST_TIMEOUT_MS: Type.Integer({ default: 300_000, minimum: 1_000 }),
  /** Audit rows and unauthenticated counts older than this are deleted (hourly, by every API replica). */
  AUDIT_RETENTION_DAYS: Type.Integer({ default: 365, minimum: 1, maximum: 36_500 }),
  /** Comma-separated addresses or CIDRs of the proxies in front of the API; only theirs X-Forwarded-For is believed. */
  API_TRUSTED_PROXIES: Type.String({ default: '' }),
  /** Failed authentications a source address may have per minute before its unknown credentials are refused unread. */
  API_AUTH_FAILURES_PER_MINUTE: Type.Integer({ default: 60, minimum: 1 }),
  JWT_JWKS_URL: Type.Optional(Type.String({ pattern: '^https?://' })),
  JWT_ISSUER: Type.Optional(Type.String()),
  JWT_AUDIENCE: Type.Optional(Type.String()),
  /** A boolean JWT claim that makes a token a platform operator's (without tenant_id); unset: operators use platform keys only. */
  JWT_PLATFORM_ADMIN_CLAIM: Type.Optional(Type.String({ minLength: 1 })),
  /** What POST /v1/platform/tenants gives a new tenant unless the call says otherwise: its GPU quota and gateway ceiling. */
  LLMHUB_TENANT_DEFAULT_GPUS: Type.Integer({ default: DEFAULT_GPU_QUOTA, minimum: 0, maximum: 100000 }),
  LLMHUB_TENANT_DEFAULT_LIMIT: Type.String({ default: DEFAULT_TENANT_LIMIT }),
  /** Bucket for the platform's own objects (ingestion manifests, agent tool results); never a tenant's. */
  PLATFORM_BUCKET: Type.String({ default: 'llmhub', minLength: 3 }),
  /** Each tenant's own bucket is this prefix and its id (hashed when too long); grants never name such a bucket. */
  LLMHUB_TENANT_BUCKET_PREFIX: Type.String({
    default: DEFAULT_TENANT_BUCKET_PREFIX,
    pattern: '^[a-z0-9][a-z0-9-]{1,29}$',
  }),
  /**
   * The object store's identity management, which gives each tenant its own S3 user owning its bucket: `versitygw`
   * (its admin API at S3_ENDPOINT, S3_ACCESS_KEY_ID being an admin); `none`: tenant buckets are made with the
   * platform's credential and tenant workloads get no S3 keys (give their namespaces a cloud identity instead).
   */
  LLMHUB_STORAGE_ADMIN: Type.Union([Type.Literal('versitygw'), Type.Literal('none')], { default: 'none' }),
  VECTOR_STORE: Type.Union([Type.Literal('lancedb'), Type.Literal('qdrant')], { default: 'lancedb' }),
  LANCEDB_DIR: Type.String({ default: '.data/lancedb' }),
  QDRANT_URL: Type.Optional(Type.String({ pattern: '^https?://' })),
  QDRANT_API_KEY: Type.Optional(Type.String()),
  /** Folder with model.onnx + tokenizer.json of the default in-process embedder (deploy/dev/models/install.sh). */
  EMBEDDING_MODEL_DIR: Type.Optional(Type.String()),
  /** An OpenAI-compatible /v1/embeddings endpoint, offered as embedder `openai:<model>`. */
  EMBEDDINGS_URL: Type.Optional(Type.String({ pattern: '^https?://' })),
  EMBEDDINGS_API_KEY: Type.Optional(Type.String()),
  UNSTRUCTURED_API_URL: Type.Optional(Type.String({ pattern: '^https?://' })),
  UNSTRUCTURED_API_KEY: Type.Optional(Type.String()),
  /** Kubeconfig of the cluster(s) model versions are served on; unset: the usual defaults (~/.kube/config, in-cluster). */
  KUBECONFIG: Type.Optional(Type.String()),
  /**
   * JSON {"<name>": {"kubeconfig"?: path} | {"runtime": "process", "command"?: [...], "stateDir"?: path}}: the clusters
   * POST /v1/deploy may name; a Kubernetes one without a kubeconfig uses KUBECONFIG.
   */
  LLMHUB_CLUSTERS: Type.String({ default: DEFAULT_CLUSTERS }),
  /** JSON {"<tenant>": "<namespace>"}; unmapped tenants get `llmhub-<tenant>`. */
  LLMHUB_TENANT_NAMESPACES: Type.String({ default: '{}' }),
  /** JSON {"<tenant>/<model>/<version>": "http://…/v1"}: dev only, when the cluster runs no containers (activities/kubernetes/endpoints.ts). */
  LLMHUB_LOCAL_ENDPOINTS: Type.Optional(Type.String()),
  LLMHUB_MODEL_SERVER_IMAGE: Type.String({ default: 'vllm/vllm-openai:v0.6.3', minLength: 1 }),
  /** Comma-separated label/annotation keys, or prefixes ending in `/`, tenants may put on their pods besides unprefixed ones. */
  LLMHUB_POD_METADATA_KEYS: Type.String({ default: '' }),
  LLMHUB_GPU_PRODUCT: Type.Optional(Type.String()),
  /**
   * JSON {"<resource>": "<quantity>"}: the ResourceQuota hard limits of every tenant namespace besides GPUs, which are
   * the tenant's GPU quota (activities/kubernetes/tenant-namespace.ts).
   */
  LLMHUB_TENANT_RESOURCE_QUOTA: Type.String({
    default: '{"pods":"100","requests.cpu":"200","requests.memory":"2000Gi"}',
  }),
  /** The namespace of the platform (its gateway): the only other namespace tenant pods accept traffic from. */
  LLMHUB_PLATFORM_NAMESPACE: Type.String({ default: 'llmhub', minLength: 1 }),
  /**
   * Comma-separated CIDRs in private ranges tenant pods may reach besides DNS (an in-cluster or private object store);
   * public addresses are always reachable, private, link-local and metadata ones otherwise not.
   */
  LLMHUB_TENANT_EGRESS_CIDRS: Type.String({ default: '' }),
  /**
   * A ClusterRole the worker binds, by a RoleBinding in each tenant namespace it applies, to its own ServiceAccount
   * LLMHUB_WORKER_SERVICE_ACCOUNT ("<namespace>:<name>"): its rights inside tenant namespaces without holding them
   * cluster-wide (the Helm chart sets both). Unset: no RoleBinding.
   */
  LLMHUB_TENANT_ROLE: Type.Optional(Type.String({ minLength: 1 })),
  LLMHUB_WORKER_SERVICE_ACCOUNT: Type.Optional(Type.String({ pattern: '^[a-z0-9][a-z0-9-]*:[a-z0-9][a-z0-9.-]*$' })),
  /**
   * Comma-separated CIDRs, addresses or host names HTTP MCP servers may be reached at although they are internal
   * (loopback, private, link-local, metadata, CGNAT, ...: common/egress.ts); default none.
   */
  LLMHUB_MCP_EGRESS_ALLOW: Type.String({ default: '' }),
  /** The same for budget alert webhooks (tenant-supplied URLs the gateway and api roles post to); default none. */
  LLMHUB_WEBHOOK_EGRESS_ALLOW: Type.String({ default: '' }),
  /** The same allowlist for external providers' base URLs (the gateway's calls and registration); default none. */
  LLMHUB_PROVIDER_EGRESS_ALLOW: Type.String({ default: '' }),
  /**
   * JSON key file of the key-encryption keys that wrap the data keys of provider credentials and budget webhook
   * secrets (common/credentials.ts: `{"primary": id, "keys": {id: base64 of 32 bytes}}`); unset: providers cannot be
   * registered nor budget webhooks set.
   */
  LLMHUB_KEK_FILE: Type.Optional(Type.String({ minLength: 1 })),
  ROLLOUT_ALERT_WEBHOOK: Type.Optional(Type.String({ pattern: '^https?://' })),
  /** Image repositories (tag: the toolchain version) of the conversion Jobs: CPU steps and the TensorRT engine build (deploy/convert/). */
  LLMHUB_CONVERT_IMAGE: Type.String({ default: 'llmhub/convert', minLength: 1 }),
  LLMHUB_CONVERT_TENSORRT_IMAGE: Type.String({ default: 'llmhub/convert-tensorrt', minLength: 1 }),
  /** The gateway agent runs call models through; default: this platform's API at API_HOST:API_PORT. */
  LLMHUB_GATEWAY_URL: Type.Optional(Type.String({ pattern: '^https?://' })),
  /** Image of the fine-tune trainer Jobs (deploy/trainers/hf). */
  LLMHUB_TRAINER_IMAGE: Type.String({ default: 'llmhub/trainer-hf:0.1.0', minLength: 1 }),
  /** Where the worker's /metrics listens (no authentication: keep it internal); a container sets 0.0.0.0. */
  WORKER_METRICS_HOST: Type.String({ default: '127.0.0.1', minLength: 1 }),
  WORKER_METRICS_PORT: Type.Integer({ default: 9464, minimum: 0, maximum: 65535 }),
  /** OTLP/HTTP collector base URL (spans go to <url>/v1/traces); unset: no tracing at all. */
  OTEL_EXPORTER_OTLP_ENDPOINT: Type.Optional(Type.String({ pattern: '^https?://' })),
  /** The service.name of this process's spans; default llmhub-api, llmhub-gateway or llmhub-worker by role. */
  OTEL_SERVICE_NAME: Type.Optional(Type.String({ minLength: 1 })),
  WORKER_SHUTDOWN_GRACE_MS: Type.Integer({ default: 30000, minimum: 0 }),
  /** How often each version's autoscaler decides (the HPA's sync period), and the window its load is averaged over. */
  LLMHUB_AUTOSCALE_SYNC_MS: Type.Integer({ default: 15000, minimum: 100 }),
  LLMHUB_AUTOSCALE_WINDOW_MS: Type.Integer({ default: 30000, minimum: 100 }),
  LOG_LEVEL: Type.Union(
    ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((l) => Type.Literal(l)),
    {
      default: 'info',
    },
  ),
});
export type Config = Static<typeof Env>;

export class ConfigError extends Error {}

export function parseEnv<T extends TSchema>(schema: T, env: NodeJS.ProcessEnv): Static<T> {
  const raw: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(env)) if (v !== undefined && v !== '') raw[k] = v;
  const value = Value.Convert(schema, Value.Default(schema, raw));
  const problems = [...Value.Errors(schema, value)].map((e) => `${e.path.slice(1) || '(root)'}: ${e.message}`);
  if (problems.length) throw new ConfigError(`invalid configuration:\n  ${problems.join('\n  ')}`);
  return Value.Clean(schema, value) as Static<T>;
}

export const loadConfig = (env: NodeJS.ProcessEnv = process.env): Config => checkTemporalTls(parseEnv(Env, env));

/** The settings that only work over TLS, and so turn it on when TEMPORAL_TLS is unset. */
export const TEMPORAL_TLS_SETTINGS = [
  'TEMPORAL_TLS_CA_FILE',
  'TEMPORAL_TLS_CERT_FILE',
  'TEMPORAL_TLS_KEY_FILE',
  'TEMPORAL_TLS_SERVER_NAME',
  'TEMPORAL_API_KEY',
] as const;

/** What can be told without reading a file; temporalConnectionOptions (common/temporal-connection.ts) reads them. */
function checkTemporalTls(config: Config): Config {
  const problems: string[] = [];
  if (config.TEMPORAL_TLS_CERT_FILE && !config.TEMPORAL_TLS_KEY_FILE)
    problems.push('TEMPORAL_TLS_KEY_FILE: required with TEMPORAL_TLS_CERT_FILE (the client certificate needs its key)');
  if (config.TEMPORAL_TLS_KEY_FILE && !config.TEMPORAL_TLS_CERT_FILE)
    problems.push('TEMPORAL_TLS_CERT_FILE: required with TEMPORAL_TLS_KEY_FILE (the key needs its client certificate)');
  const needTls = TEMPORAL_TLS_SETTINGS.filter((name) => config[name]);
  // An API key in plaintext would be readable on the way; the TLS settings would silently do nothing.
  if (config.TEMPORAL_TLS === false && needTls.length)
    problems.push(`TEMPORAL_TLS: false, but ${needTls.join(', ')} need TLS`);
  if (problems.length) throw new ConfigError(`invalid configuration:\n  ${problems.join('\n  ')}`);
  return config;
}

/** A comma-separated list of CIDRs (IPv4 or IPv6), each checked, so a typo stops the worker instead of every deploy. */
export function cidrListEnv(name: string, raw: string): string[] {
  const cidrs = raw
    .split(',')
    .map((c) => c.trim())
    .filter(Boolean);
  const bad = cidrs.filter((c) => {
    const [addr = '', bits, ...rest] = c.split('/');
    const max = { 4: 32, 6: 128 }[isIP(addr)];
    return !max || rest.length > 0 || !/^\d{1,3}$/.test(bits ?? '') || Number(bits) > max;
  });
  if (bad.length) throw new ConfigError(`invalid configuration:\n  ${name}: not CIDRs: ${bad.join(', ')}`);
  return cidrs;
}

/** A JSON-valued variable, parsed with the variable's name in the error. */
export function jsonEnv<T extends TSchema>(name: string, raw: string, schema: T): Static<T> {
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch (err) {
    throw new ConfigError(`invalid configuration:\n  ${name}: not JSON (${(err as Error).message})`);
  }
  const problems = [...Value.Errors(schema, value)].map((e) => `${e.path || '(root)'}: ${e.message}`);
  if (problems.length) throw new ConfigError(`invalid configuration:\n  ${name}: ${problems.join('; ')}`);
  return value as Static<T>;
}

/** A pod toleration as Kubernetes spells it (the fields a placement needs). */
const Toleration = Type.Object(
  {
    key: Type.Optional(Type.String({ minLength: 1 })),
    operator: Type.Optional(Type.Union([Type.Literal('Exists'), Type.Literal('Equal')])),
    value: Type.Optional(Type.String()),
    effect: Type.Optional(
      Type.Union([Type.Literal('NoSchedule'), Type.Literal('PreferNoSchedule'), Type.Literal('NoExecute')]),
    ),
  },
  { additionalProperties: false },
);

const Cluster = Type.Object({
  /** "kubernetes" (default): Deployments on the cluster of `kubeconfig`; "process": local processes, for dev on a laptop (dev worker only). */
  runtime: Type.Optional(Type.Union([Type.Literal('kubernetes'), Type.Literal('process')])),
  kubeconfig: Type.Optional(Type.String({ minLength: 1 })),
  /** process runtime: argv of a version's server, with {port}, {model}, {version}, {artifactUri} filled in (deploy/dev/local-runtime.ts). */
  command: Type.Optional(Type.Array(Type.String(), { minItems: 1 })),
  /** process runtime: where it keeps each version's pid, port and log; default .data/local-runtime/<cluster>. */
  stateDir: Type.Optional(Type.String({ minLength: 1 })),
  /** Annotations put on the pod template of every Job the platform runs there (e.g. `sidecar.istio.io/inject: "false"`). */
  jobPodAnnotations: Type.Optional(Type.Record(Type.String(), Type.String())),
  /**
   * What POST /v1/deploy gives a replica when neither the body nor the model names resources ({cpu, gpu, memory});
   * each field left out is the platform's (1 core, 0 GPUs, 4Gi).
   */
  defaultResources: Type.Optional(PartialResources),
  /**
   * Where the model servers and Jobs (trainers, conversion steps) the platform runs there are placed, merged into their
   * pod specs: e.g. the local cluster's real node (`{"llmhub.dev/node-kind": "real"}` and a toleration of its
   * `llmhub.dev/real-node` taint). A GPU pod adds its own toleration and product label.
   */
  nodeSelector: Type.Optional(Type.Record(Type.String({ minLength: 1 }), Type.String())),
  tolerations: Type.Optional(Type.Array(Toleration)),
  /**
   * How the gateway reaches a served version's Service: "dns" (default) by its cluster DNS name, for a gateway inside
   * the cluster; "clusterIP" by its ClusterIP, for a gateway on a host that routes the Service range but has no cluster
   * DNS (the local real node). Such a cluster never uses LLMHUB_LOCAL_ENDPOINTS.
   */
  serviceAddress: Type.Optional(Type.Union([Type.Literal('dns'), Type.Literal('clusterIP')])),
});
const Clusters = Type.Record(Type.String({ pattern: '^[a-z0-9][a-z0-9-]{0,62}$' }), Cluster);
export type ClusterSettings = Static<typeof Clusters>;
/** Takes the raw variable, so the API can know the cluster names without the rest of the configuration. */
export function clustersOf(raw: string | undefined): ClusterSettings {
  const clusters = jsonEnv('LLMHUB_CLUSTERS', raw || DEFAULT_CLUSTERS, Clusters);
  for (const [name, c] of Object.entries(clusters)) {
    const cpu = c.defaultResources?.cpu;
    if (cpu !== undefined && !(toCores(cpu) > 0))
      throw new ConfigError(
        `invalid configuration:\n  LLMHUB_CLUSTERS: /${name}/defaultResources/cpu must be more than 0`,
      );
  }
  return clusters;
}

/** A tenant's gateway ceiling: the configured default, and what an operator's PUT takes (api/routes/platform.ts). */
export const Ceiling = Type.Object(
  {
    windowSeconds: Type.Integer({ minimum: 1, maximum: 2_147_483_647 }),
    maxRequests: Type.Optional(Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER })),
    maxTokens: Type.Optional(Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER })),
  },
  { additionalProperties: false },
);
export type LimitCeiling = Static<typeof Ceiling>;
export const tenantDefaultLimitOf = (raw: string | undefined): LimitCeiling =>
  jsonEnv('LLMHUB_TENANT_DEFAULT_LIMIT', raw || DEFAULT_TENANT_LIMIT, Ceiling);
