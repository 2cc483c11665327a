import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { NativeConnection } from '@temporalio/worker';
import type { FastifyInstance } from 'fastify';
import type { Pool } from 'pg';
import { createPlatformActivities, type PlatformActivityDeps } from '../../activities';
import { buildApp, type AppDeps } from '../../api/app';
import type { GatewaySettings } from '../../api/gateway/settings';
import type { JwtSettings } from '../../api/plugins/auth';
import { clustersOf, loadConfig } from '../../common/config';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { CredentialVault, KeyFileKeks, newKeyFile } from '../../common/credentials';
import { EgressPolicy } from '../../common/egress';
import { createLogger, type Logger } from '../../common/logger';
import { S3ObjectStore, s3StoreFromConfig, type ObjectStore } from '../../common/objectstore';
import { createPool } from '../../common/store/pool';
import { tracingClientInterceptors } from '../../common/temporal-tracing';
import type { Tracing } from '../../common/tracing';
import type { StorageAdmin } from '../../common/storage-admin';
import { storageAdminFromConfig } from '../../common/storage-admin/from-config';
import { StorageScopeStore } from '../../common/store/storage-scope';
import { tenantStorage } from '../../common/tenant-storage';
import { testKubeConfig } from '../../deploy/dev/kube/cluster';
import { RegistryStore } from '../../common/store/registry';
import { TenantStore } from '../../common/store/tenants';
import type { Role } from '../../contracts/approvals';
import { startWorker, type RunningWorker } from '../../workers/bootstrap';
import { platformActivityDeps } from '../../workers/platform-deps';
import { EmbedderRegistry, vectorStoreFromConfig } from '../../common/knowledge';
import type { VectorStore } from '../../common/vectors';
import { pollFor, startProcess, type ManagedProcess } from '../../deploy/dev/process';
import { podMetadataKeysOf } from '../../common/workload-policy';

export const uniqueId = (prefix: string): string => `${prefix}-${randomBytes(4).toString('hex')}`;

export interface TestTenant {
  id: string;
  keys: Record<Role, string>;
  /** Its own bucket, made with it (its storage scope). */
  bucket: string;
}

/** Everything a test needs on the shared stack: the API app, a worker on the file's own task queue, clients. */
export interface TestPlatform {
  app: FastifyInstance;
  db: Pool;
  temporal: Client;
  objects: S3ObjectStore;
  taskQueue: string;
  tenants: TenantStore;
  registry: RegistryStore;
  vectors: VectorStore;
  storageScopes: StorageScopeStore;
  /** The object store's identity management the API uses (versitygw's admin API in tests). */
  storageAdmin: StorageAdmin | undefined;
  createTenant(prefix?: string): Promise<TestTenant>;
  /** A platform operator's key (`/v1/platform/*`). */
  operatorKey: string;
  /** The key file of the providers' key-encryption keys (rewrite it to rotate). */
  kekFile: string;
  /** Starts another worker on the same task queue with different deps (e.g. another S3 server). */
  startWorker(objects?: ObjectStore): Promise<RunningWorker>;
  close(): Promise<void>;
}

/** `objects` and `activityDeps` override what the worker's activities use (the API keeps the shared object store). */
export async function startTestPlatform(
  opts: {
    jwt?: JwtSettings;
    objects?: ObjectStore;
    worker?: boolean;
    gateway?: Partial<GatewaySettings>;
    auth?: AppDeps['auth'];
    trustedProxies?: string[];
    requestTimeoutMs?: number;
    activityDeps?: Partial<PlatformActivityDeps>;
    /** The operator's MCP egress allowlist for API and worker; default the loopback the tests' MCP HTTP servers use. */
    mcpEgressAllow?: string[];
    /** A registered tracer provider: the Temporal client and worker trace as the api and worker processes do. */
    tracing?: Tracing;
    /** The API's logger (a test that reads what was logged); default warnings and errors to stdout. */
    logger?: Logger;
  } = {},
): Promise<TestPlatform> {
  const config = loadConfig();
  const logger = opts.logger ?? createLogger('test', process.env.LOG_LEVEL ?? 'warn');
  const taskQueue = uniqueId('tq');
  const db = createPool(config.DATABASE_URL, 20);
  const objects = s3StoreFromConfig(config);
  const connection = await Connection.connect({ address: config.TEMPORAL_ADDRESS });
  const temporal = new Client({
    connection,
    namespace: config.TEMPORAL_NAMESPACE,
    interceptors: tracingClientInterceptors(opts.tracing),
  });
  const nativeConnection = await NativeConnection.connect({ address: config.TEMPORAL_ADDRESS });
  const tenants = new TenantStore(db);
  const registry = new RegistryStore(db);
  const vectors = await vectorStoreFromConfig(config);
  const embedders = new EmbedderRegistry(config);
  const egress = new EgressPolicy(opts.mcpEgressAllow ?? ['127.0.0.1/32']);
  // Providers' key-encryption keys in a key file of the test's own; their egress allows the loopback test servers.
  const kekFile = path.join(mkdtempSync(path.join(tmpdir(), 'llmhub-kek-')), 'keys.json');
  writeFileSync(kekFile, newKeyFile(), { mode: 0o600 });
  const providers = {
    vault: new CredentialVault(new KeyFileKeks(kekFile)),
    egress: new EgressPolicy(['127.0.0.1/32'], undefined, { setting: 'LLMHUB_PROVIDER_EGRESS_ALLOW' }),
  };
  const storageScopes = new StorageScopeStore(db, config.LLMHUB_TENANT_BUCKET_PREFIX);
  const storageAdmin = storageAdminFromConfig(config);
  const storage = tenantStorage(storageScopes, objects, storageAdmin);
  const workers: RunningWorker[] = [];
  const launch = async (o: ObjectStore = opts.objects ?? objects) => {
    const w = await startWorker({
      connection: nativeConnection,
      namespace: config.TEMPORAL_NAMESPACE,
      taskQueue,
      activities: createPlatformActivities(
        await platformActivityDeps(config, db, {
          egress,
          // Cluster `local` (the default LLMHUB_CLUSTERS) is the run's local control plane, as jest's set-up made it.
          kubeConfigOf: (cluster) => (cluster === 'local' ? testKubeConfig() : undefined),
          ...opts.activityDeps,
          objects: o,
          vectors,
        }),
      ),
      // The shared bundle lacks the tracing interceptors; a traced worker bundles the workflows with them itself.
      workflows: opts.tracing
        ? { workflowsPath: require.resolve('../../workflows') }
        : { workflowBundle: { codePath: process.env.LLMHUB_WORKFLOW_BUNDLE! } },
      logger,
      handleSignals: false,
      shutdownGraceMs: 2_000,
      tracing: opts.tracing,
    });
    workers.push(w);
    return w;
  };
  const closeClients = async () => {
    await Promise.all(workers.map((w) => w.shutdown()));
    await nativeConnection.close();
    await connection.close();
    await db.end();
    await egress.close();
    await providers.egress.close();
  };
  let app: FastifyInstance;
  try {
    // worker: false when the test runs the worker as a separate process it can kill.
    if (opts.worker !== false) await launch();
    app = await buildApp({
      db,
      temporal,
      objects,
      taskQueue,
      logger,
      jwt: opts.jwt,
      gateway: opts.gateway,
      auth: opts.auth,
      trustedProxies: opts.trustedProxies,
      requestTimeoutMs: opts.requestTimeoutMs,
      vectors,
      embedders,
      platformBucket: config.PLATFORM_BUCKET,
      tenantBucketPrefix: config.LLMHUB_TENANT_BUCKET_PREFIX,
      ...(storageAdmin ? { storageAdmin } : {}),
      tenantResources: [storage],
      clusters: clustersOf(config.LLMHUB_CLUSTERS),
      podMetadataKeys: podMetadataKeysOf(config.LLMHUB_POD_METADATA_KEYS),
      mcpEgress: egress,
      webhookEgress: egress,
      providers,
    });
    await app.ready();
  } catch (err) {
    // A half-built platform must not leave a polling worker behind: it would keep jest alive forever.
    await closeClients();
    throw err;
  }
  return {
    app,
    db,
    temporal,
    objects,
    taskQueue,
    tenants,
    registry,
    vectors,
    storageScopes,
    storageAdmin,
    startWorker: launch,
    kekFile,
    operatorKey: (await tenants.createPlatformKey('test-operator')).key,
    async createTenant(prefix = 'tenant') {
      const id = uniqueId(prefix);
      // As POST /v1/platform/tenants does: its storage scope first, then the tenant.
      await storage.create(id);
      await tenants.createTenant(id, id);
      const keys = {} as Record<Role, string>;
      for (const role of ['viewer', 'developer', 'operator', 'approver', 'admin'] as const) {
        keys[role] = (await tenants.createApiKey(id, `${role}-key`, role)).key;
      }
      return { id, keys, bucket: storageScopes.bucketOf(id) };
    },
    async close() {
      await app.close();
      await closeClients();
    },
  };
}

/** Waits on a condition (never on time): resolves with the first value `fn` gives that is not undefined/false. */
export const eventually = <T>(
  what: string,
  fn: () => Promise<T | undefined | false>,
  timeoutMs = 120_000,
): Promise<T> => pollFor(what, fn, timeoutMs, 100);

export const bearer = (key: string) => ({ authorization: `Bearer ${key}` });

/** The platform worker as a real process on the platform's task queue, so a test can SIGKILL it; `env` adds to its configuration. */
export const startWorkerProcess = (p: TestPlatform, env: NodeJS.ProcessEnv = {}): Promise<ManagedProcess> =>
  startProcess({
    name: uniqueId('crash-worker'),
    command: process.execPath,
    args: ['--import', 'tsx', path.resolve(__dirname, '..', '..', 'roles', 'worker.ts')],
    dataDir: process.env.LLMHUB_TEST_DATA!,
    env: { TEMPORAL_TASK_QUEUE: p.taskQueue, WORKER_METRICS_PORT: '0', LOG_LEVEL: 'warn', NODE_OPTIONS: '', ...env },
  });
