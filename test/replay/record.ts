/**
 * Records workflow histories for the replay gate (test/replay/histories/<name>.json).
 *
 *   npm run replay:record -- --workflow-id <id> --name <name>   # from a running server (TEMPORAL_ADDRESS, default dev)
 *   npm run replay:record -- --scenarios [--only <scenario>]      # runs the scenarios below on a throw-away stack
 *
 * Histories are recorded once, committed and never re-recorded by CI: a replay failure means the code changed
 * in a way running workflows would not survive, so guard the change with patched() instead of re-recording.
 */
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Client, Connection, WorkflowFailedError } from '@temporalio/client';
import { historyToJSON } from '@temporalio/common/lib/proto-utils';
import { bundleWorkflowCode, type NativeConnection } from '@temporalio/worker';
import { createPlatformActivities, type PlatformActivityDeps } from '../../activities';
import { localEndpointKey, localEndpoints } from '../../activities/kubernetes/endpoints';
import { clustersOf, type Config } from '../../common/config';
import { DEFAULT_ANALYSIS, type RolloutInput } from '../../contracts/rollout';
import { autoscalerStatusQuery, autoscalerWakeSignal, autoscalerWorkflowId } from '../../contracts/autoscaling';
import { RoutingStore } from '../../common/store/routing';
import { GatewayMetricsStore, type VersionMetricsRow } from '../../common/store/gateway-metrics';
import { startKubeCluster } from '../../deploy/dev/kube/cluster';
import { startReferenceModelServer } from '../../deploy/dev/model-server/server';
import { serveModel } from '../support/gateway';
import { createLogger } from '../../common/logger';
import { s3StoreFromConfig, type S3ObjectStore } from '../../common/objectstore';
import { createPool } from '../../common/store/pool';
import { CoreV1Api, KubernetesObjectApi } from '@kubernetes/client-node';
import { serverSideApply, tenantNamespace } from '../../activities/kubernetes/client';
import { defaultNamespaceOf, Labels } from '../../activities/kubernetes/manifests';
import { GpuQuotaStore } from '../../common/store/gpu-quota';
import { providerTarget, ProviderStore } from '../../common/store/providers';
import { RegistryStore } from '../../common/store/registry';
import { TenantStore } from '../../common/store/tenants';
import { StorageScopeStore } from '../../common/store/storage-scope';
import { storageAdminFromConfig } from '../../common/storage-admin/from-config';
import { tenantStorage } from '../../common/tenant-storage';
import { startWorker } from '../../workers/bootstrap';
import { platformActivityDeps } from '../../workers/platform-deps';
import { withScratchStack } from '../support/scratch-stack';
import {
  localConversionDeps,
  seededMlp,
  startConversionJobRunner,
  startHeldConversionJobs,
} from '../support/conversion';
import { conversionJobName } from '../../activities/conversion/jobs';
import type { ConversionInput } from '../../contracts/conversion';
import { conversionToolchainVersion } from '../../common/conversion-toolchain';
import { ConversionStore } from '../../common/store/conversions';
import { runScript } from '../support/script';
import { fixture, seedCatalogEntry } from '../support/mcp';
import { MCP_DISCOVERY_WORKFLOW, PLATFORM_OWNER } from '../../contracts/mcp-discovery';
import { LOCAL_PROCESS_ANNOTATIONS } from '../../deploy/dev/kube/local-jobs';
import {
  DEFAULT_HYPERPARAMETERS,
  fineTuneContract,
  type FineTuneInput,
  type FineTuneStatus,
} from '../../contracts/fine-tune';
import {
  gpuNodes,
  HYPERPARAMETERS,
  prepare,
  referenceTrainer,
  startReferenceTrainerRunner,
  task,
} from '../support/fine-tune';
import { buildApp } from '../../api/app';
import type { AgentRunStatus } from '../../contracts/agent-run';
import { EmbedderRegistry, vectorStoreFromConfig } from '../../common/knowledge';
import { freePort, pollFor } from '../../deploy/dev/process';
import { conversionClaimOf, conversionInputOf, conversionOptionsOf } from '../../common/conversion-plan';
import type { ApprovalRequest } from '../../contracts/approvals';
import { pipelineChildKey, pipelineContract, type PipelineInput, type PipelineStatus } from '../../contracts/pipeline';
import { ModelIdKey, OperationKindKey, TenantIdKey } from '../../contracts/search-attributes';
import { tenantDeletionContract, type TenantDeletionInput } from '../../contracts/tenant-deletion';
import { BATCH_PAGE_LINES, batchContract, fileKey, type BatchInput } from '../../contracts/batch';
import { workflowId } from '../../contracts/operations';
import { BatchStore, newObjectId } from '../../common/store/batches';
import { chatLines, multipart } from '../support/batch';

const HISTORIES = path.join(__dirname, 'histories');

/** Scenarios record failed runs on purpose: only an error other than the workflow's own failure stops the recording. */
function failedOnPurpose(err: unknown): void {
  if (!(err instanceof WorkflowFailedError)) throw err;
}

async function save(client: Client, workflowId: string, name: string, runId?: string): Promise<void> {
  const file = path.join(HISTORIES, `${name}.json`);
  // A committed history is what older code recorded: recording a scenario again adds its new histories only.
  if (existsSync(file)) {
    console.log(`kept ${path.relative(process.cwd(), file)} (recorded before; delete it to record it again)`);
    return;
  }
  const history = await client.workflow.getHandle(workflowId, runId).fetchHistory();
  // The canonical proto3 JSON (what `temporal workflow show --output json` writes), which replay parses back.
  await writeFile(file, `${JSON.stringify(JSON.parse(historyToJSON(history)), null, 2)}\n`);
  console.log(`recorded ${workflowId} -> ${path.relative(process.cwd(), file)} (${history.events?.length} events)`);
}

interface ScenarioContext {
  client: Client;
  taskQueue: string;
  objects: S3ObjectStore;
  registry: RegistryStore;
  db: ReturnType<typeof createPool>;
  config: Config;
  native: NativeConnection;
}

/**
 * Promote and rollback on a real local Kubernetes cluster started for the scenario. The scratch stack runs no
 * gateway, so a loop writes SYNTHETIC gateway metrics rows (healthy for v2, half failing for v3) for the analyses.
 * With `refused`, a last rollout (v4) asks for more GPUs than the tenant's quota.
 */
async function recordRollouts(
  { client, config, native, db, registry }: ScenarioContext,
  names: { promoted: string; rolledBack: string; refused?: string },
): Promise<Record<string, string>> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'llmhub-record-kube-'));
  const cluster = await startKubeCluster({ dataDir, fresh: true, randomPorts: true });
  const server = await startReferenceModelServer({ name: 'replay-chat' });
  const tenants = new TenantStore(db);
  await tenants.createTenant('replay', 'replay');
  // The env's secretRef must name a Secret labelled for the tenant in its namespace.
  const kc = cluster.kubeConfig();
  await serverSideApply(KubernetesObjectApi.makeApiClient(kc), tenantNamespace(defaultNamespaceOf('replay')));
  await kc.makeApiClient(CoreV1Api).createNamespacedSecret({
    namespace: defaultNamespaceOf('replay'),
    body: { metadata: { name: 'hf', labels: { [Labels.tenant]: 'replay' } }, stringData: { token: 'x' } },
  });
  const endpoints = new Map<string, string>();
  for (const version of ['v1', 'v2', 'v3', 'v4'])
    endpoints.set(localEndpointKey({ tenantId: 'replay', modelId: 'chat', version }), server.url);
  await serveModel(db, 'replay', 'chat', { v1: server.url }, { stable: 'v1' });
  for (const version of ['v2', 'v3', 'v4']) {
    await registry.insertVersion(db, 'replay', {
      modelId: 'chat',
      version,
      artifactUri: `s3://models/chat/${version}`,
      workflowId: `record/${version}`,
    });
    await registry.markVersionReady('replay', 'chat', version, { sizeBytes: 1, checksum: 'sha256:00', etag: null });
  }
  const synthetic = syntheticMetrics(db, 'replay', { v2: 0, v3: 5 });
  const taskQueue = 'record-rollout';
  const worker = await scenarioWorker({ config, db, native }, taskQueue, {
    kubeConfigOf: (c) => (c === 'local' ? cluster.kubeConfig() : undefined),
    endpointOf: localEndpoints(endpoints),
  });
  const analysis = { ...DEFAULT_ANALYSIS, interval: '1s', minRequests: 5, failureLimit: 2 };
  const run = async (version: string, gpu = 1) => {
    const workflowId = `rollout/replay/${version}`;
    await db.query(
      `INSERT INTO rollout_locks (tenant_id, model_id, deployment_id, workflow_id) VALUES ('replay', 'chat', $1, $2)`,
      [version, workflowId],
    );
    const input: RolloutInput = {
      tenantId: 'replay',
      modelId: 'chat',
      version,
      deploymentId: version,
      cluster: 'local',
      resources: { cpu: '1', gpu, memory: '8Gi' },
      env: { HF_TOKEN: { secretRef: { name: 'hf', key: 'token' } }, LOG_LEVEL: 'info' },
      strategy: {
        steps: [
          { setWeight: 20 },
          { pause: { duration: '1s' } },
          { analysis: {} },
          { setWeight: 100 },
          { pause: { duration: '1s' } },
          { analysis: {} },
        ],
        analysis,
        readinessTimeout: '2m',
        canaryMetadata: { annotations: {}, labels: {} },
      },
      specHash: 'record',
    };
    await client.workflow.execute('rolloutModel', { taskQueue, workflowId, args: [input] }).catch(failedOnPurpose);
    return workflowId;
  };
  try {
    const recorded = { [names.promoted]: await run('v2'), [names.rolledBack]: await run('v3') };
    if (!names.refused) return recorded;
    await new GpuQuotaStore(db).setQuota('replay', 1);
    return { ...recorded, [names.refused]: await run('v4', 2) };
  } finally {
    clearInterval(synthetic);
    await worker.shutdown();
    await server.close();
    await cluster.stop();
    await rm(dataDir, { recursive: true, force: true });
  }
}

/**
 * Provider canaries (POST /v1/deploy with a provider): a healthy one promoted to the provider route's stable, a
 * failing one rolled back. Nothing is deployed and nothing is called: the providers are rows (their credentials never
 * opened), and a loop writes SYNTHETIC gateway metrics of each `provider:<ref>` target for the analyses.
 */
async function recordProviderCanaries({
  client,
  config,
  native,
  db,
}: ScenarioContext): Promise<Record<string, string>> {
  const tenantId = 'replay-pv';
  await new TenantStore(db).createTenant(tenantId, tenantId);
  await serveModel(db, tenantId, 'chat', { v1: 'http://127.0.0.1:9/v1' }, { stable: 'v1' });
  const providers = new ProviderStore(db);
  for (const id of ['good', 'bad'])
    await providers.create({
      tenantId,
      id,
      kind: 'openai',
      baseUrl: 'http://127.0.0.1:9/v1',
      apiVersion: null,
      headers: {},
      models: { chat: { model: 'chat' } },
      credential: { v: 1, kek: 'none', wrappedKey: '', iv: '', tag: '', ciphertext: '' },
    });
  const synthetic = syntheticMetrics(db, tenantId, { [providerTarget('good')]: 0, [providerTarget('bad')]: 10 });
  const taskQueue = 'record-provider-canary';
  const worker = await scenarioWorker({ config, db, native }, taskQueue, {});
  const run = async (provider: string) => {
    const workflowId = `rollout/${tenantId}/${provider}`;
    await db.query(
      `INSERT INTO rollout_locks (tenant_id, model_id, deployment_id, workflow_id) VALUES ($1, 'chat', $2, $3)`,
      [tenantId, provider, workflowId],
    );
    const input: RolloutInput = {
      tenantId,
      modelId: 'chat',
      version: providerTarget(provider),
      provider,
      deploymentId: provider,
      cluster: '',
      resources: { cpu: '0', gpu: 0, memory: '0' },
      env: {},
      strategy: {
        steps: [{ setWeight: 50 }, { pause: { duration: '1s' } }, { analysis: {} }],
        analysis: { ...DEFAULT_ANALYSIS, interval: '1s', minRequests: 5, failureLimit: 2 },
        readinessTimeout: '15m',
        canaryMetadata: { annotations: {}, labels: {} },
      },
      specHash: 'record',
    };
    await client.workflow.execute('rolloutModel', { taskQueue, workflowId, args: [input] }).catch(failedOnPurpose);
    return workflowId;
  };
  try {
    return {
      'rollout-provider-canary-promoted': await run('good'),
      'rollout-provider-canary-rolled-back': await run('bad'),
    };
  } finally {
    clearInterval(synthetic);
    await worker.shutdown();
  }
}

/**
 * An autoscaled version on a real local Kubernetes cluster: its rollout promotes it and starts its autoscaler, which
 * scales up on SYNTHETIC gateway metrics rows (busy time of 2.5 requests in flight), back down and to zero once they
 * stop, starts again on a wake-up, and stops when another version takes the route.
 */
async function recordAutoscaler({
  client,
  config,
  native,
  db,
  registry,
}: ScenarioContext): Promise<Record<string, string>> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'llmhub-record-kube-'));
  const cluster = await startKubeCluster({ dataDir, fresh: true, randomPorts: true });
  const server = await startReferenceModelServer({ name: 'replay-autoscaled' });
  await new TenantStore(db).createTenant('replay-as', 'replay-as');
  const endpoints = new Map<string, string>();
  await serveModel(db, 'replay-as', 'chat', { v0: server.url }, { stable: 'v0' });
  for (const version of ['v1', 'v2']) {
    endpoints.set(localEndpointKey({ tenantId: 'replay-as', modelId: 'chat', version }), server.url);
    await registry.insertVersion(db, 'replay-as', {
      modelId: 'chat',
      version,
      artifactUri: `s3://models/chat/${version}`,
      workflowId: `record/${version}`,
    });
    await registry.markVersionReady('replay-as', 'chat', version, { sizeBytes: 1, checksum: 'sha256:00', etag: null });
  }
  const metrics = new GatewayMetricsStore(db);
  const busy = setInterval(
    () =>
      void metrics
        .insert('record', Date.now(), [
          {
            tenantId: 'replay-as',
            modelId: 'chat',
            version: 'v1',
            requests: 5,
            errors: 0,
            errorClasses: {},
            latencyBuckets: new Array<number>(16).fill(0),
            ttftBuckets: new Array<number>(16).fill(0),
            promptTokens: 0,
            completionTokens: 0,
            busyMs: 2.5 * 300,
          },
        ])
        .catch(() => undefined),
    300,
  );
  const taskQueue = 'record-autoscaler';
  const worker = await scenarioWorker({ config, db, native }, taskQueue, {
    kubeConfigOf: (c) => (c === 'local' ? cluster.kubeConfig() : undefined),
    endpointOf: localEndpoints(endpoints),
    autoscale: { syncMs: 300, windowMs: 1_500 },
  });
  const rolloutId = 'rollout/replay-as/v1';
  const autoscalerId = autoscalerWorkflowId('replay-as', 'chat', 'v1');
  const decisions = async () =>
    (await client.workflow.getHandle(autoscalerId).query(autoscalerStatusQuery)).decisions.map((d) => d.reason);
  try {
    await db.query(
      `INSERT INTO rollout_locks (tenant_id, model_id, deployment_id, workflow_id) VALUES ('replay-as', 'chat', 'v1', $1)`,
      [rolloutId],
    );
    const input: RolloutInput = {
      tenantId: 'replay-as',
      modelId: 'chat',
      version: 'v1',
      deploymentId: 'v1',
      cluster: 'local',
      resources: { cpu: '100m', gpu: 0, memory: '1Gi' },
      env: {},
      strategy: {
        steps: [{ setWeight: 100 }],
        analysis: DEFAULT_ANALYSIS,
        readinessTimeout: '2m',
        canaryMetadata: { annotations: {}, labels: {} },
      },
      specHash: 'record',
      autoscaling: {
        minReplicas: 0,
        maxReplicas: 3,
        target: { concurrency: 1 },
        scaleDownDelay: '1s',
        scaleToZeroAfter: '2s',
      },
    };
    await client.workflow.execute('rolloutModel', { taskQueue, workflowId: rolloutId, args: [input] });
    await pollFor('scaled up to 3', async () => (await decisions()).includes('scale_up'), 120_000, 300);
    clearInterval(busy);
    await pollFor('scaled to zero', async () => (await decisions()).includes('scale_to_zero'), 120_000, 300);
    await client.workflow.getHandle(autoscalerId).signal(autoscalerWakeSignal);
    await pollFor('woken', async () => (await decisions()).includes('wake'), 120_000, 300);
    await new RoutingStore(db).setRoute('replay-as', 'chat', { stable: 'v2' });
    await client.workflow.getHandle(autoscalerId).result();
    return { 'rollout-promoted-autoscaled': rolloutId, 'autoscaler-up-down-zero-woken-stopped': autoscalerId };
  } finally {
    clearInterval(busy);
    await worker.shutdown();
    await server.close();
    await cluster.stop();
    await rm(dataDir, { recursive: true, force: true });
  }
}

/** A tenant with its storage scope, as POST /v1/platform/tenants makes one; answers its bucket. */
/**
 * Gateway metrics for model `chat`'s targets, 10 requests each per 300 ms with the given errors, so rollout analyses
 * decide without traffic. Returns the timer for clearInterval.
 */
function syntheticMetrics(
  db: ScenarioContext['db'],
  tenantId: string,
  errorsByTarget: Record<string, number>,
): NodeJS.Timeout {
  const metrics = new GatewayMetricsStore(db);
  const rows = Object.entries(errorsByTarget).map(([version, errors]): VersionMetricsRow => ({
    tenantId,
    modelId: 'chat',
    version,
    requests: 10,
    errors,
    errorClasses: errors ? { upstream_5xx: errors } : {},
    latencyBuckets: [0, 0, 0, 10, ...new Array<number>(12).fill(0)],
    ttftBuckets: new Array<number>(16).fill(0),
    promptTokens: 0,
    completionTokens: 0,
  }));
  return setInterval(() => void metrics.insert('record', Date.now(), rows).catch(() => undefined), 300);
}

async function createTenant(c: Pick<ScenarioContext, 'db' | 'objects' | 'config'>, id: string): Promise<string> {
  const scopes = new StorageScopeStore(c.db, c.config.LLMHUB_TENANT_BUCKET_PREFIX);
  await tenantStorage(scopes, c.objects, storageAdminFromConfig(c.config)).create(id);
  await new TenantStore(c.db).createTenant(id, id);
  return scopes.bucketOf(id);
}

/** A worker of the scenario's own task queue, with the activities' deps the scenario overrides. */
async function scenarioWorker(
  c: Pick<ScenarioContext, 'config' | 'db' | 'native'>,
  taskQueue: string,
  overrides: Partial<PlatformActivityDeps>,
  logger = createLogger('record', 'warn'),
) {
  return startWorker({
    connection: c.native,
    namespace: 'default',
    taskQueue,
    activities: createPlatformActivities(await platformActivityDeps(c.config, c.db, overrides)),
    workflows: { workflowBundle: await bundleWorkflowCode({ workflowsPath: require.resolve('../../workflows') }) },
    logger,
    handleSignals: false,
  });
}

/** Each scenario runs real workflows to completion and returns {name: workflowId} to record. */
const scenarios: Record<string, (c: ScenarioContext) => Promise<Record<string, string>>> = {
  async 'model-version'({ client, taskQueue, objects, registry, db, config }) {
    const bucket = await createTenant({ db, objects, config }, 'replay');
    await registry.createModel('replay', { id: 'tiny', name: 'tiny', description: '' });
    await objects.put({ bucket, key: 'tiny/1/model.bin' }, 'tiny weights');
    const run = async (version: string, artifactUri: string) => {
      const workflowId = `model-version/replay/${version}`;
      await db.query(
        `INSERT INTO model_versions (tenant_id, model_id, version, artifact_uri, state, workflow_id) VALUES ('replay', 'tiny', $1, $2, 'registering', $3)`,
        [version, artifactUri, workflowId],
      );
      const handle = await client.workflow.start('registerModelVersion', {
        taskQueue,
        workflowId,
        args: [{ tenantId: 'replay', modelId: 'tiny', version, artifactUri }],
      });
      await handle.result().catch(failedOnPurpose);
      return workflowId;
    };
    return {
      'model-version-ready': await run('1', `s3://${bucket}/tiny/1/model.bin`),
      'model-version-artifact-missing': await run('2', `s3://${bucket}/tiny/2/missing.bin`),
    };
  },
  async rollout(c) {
    return recordRollouts(c, { promoted: 'rollout-promoted', rolledBack: 'rollout-analysis-rolled-back' });
  },
  /** The same past the 'rollout-serving-gpu-quota' patch, and a rollout refused past the tenant's GPU quota. */
  async 'rollout-gpu-quota'(c) {
    return recordRollouts(c, {
      promoted: 'rollout-promoted-gpu-quota',
      rolledBack: 'rollout-analysis-rolled-back-gpu-quota',
      refused: 'rollout-refused-gpu-quota',
    });
  },
  autoscaler: recordAutoscaler,
  'rollout-provider-canary': recordProviderCanaries,
  async ingestion({ client, taskQueue, objects, db, config }) {
    const bucket = await createTenant({ db, objects, config }, 'replay');
    const docs: Record<string, string> = {
      'a.md': '# Alpha\n\nThe first document talks about volcanoes and lava.\n',
      'b.txt': 'The second document is about baking bread with sourdough.\n',
      'c.html': '<h1>Gamma</h1><p>The third document covers quarterly revenue.</p>',
      'broken.pdf': '%PDF-1.7 not really a pdf',
    };
    for (const [name, body] of Object.entries(docs)) await objects.put({ bucket, key: `docs/${name}` }, body);
    const run = async (key: string) => {
      const workflowId = `ingestion/replay/${key}`;
      const input = {
        tenantId: 'replay',
        namespace: 'handbook',
        ingestionId: key,
        source: { type: 's3' as const, bucket, prefix: 'docs/' },
        parser: 'builtin' as const,
        chunking: { strategy: 'heading' as const, size: 500, overlap: 50 },
        embedder: 'default',
        // One document per batch, two at a time: four batches through the sliding window.
        batchSize: 1,
        parallelism: 2,
      };
      await client.workflow.execute('ingestDocuments', { taskQueue, workflowId, args: [input] });
      return workflowId;
    };
    const first = await run('first');
    await objects.delete({ bucket, key: 'docs/b.txt' });
    return { 'ingestion-sliding-first-run': first, 'ingestion-sliding-rerun-with-deletion': await run('rerun') };
  },
  /**
   * Conversions on a local Kubernetes cluster started for the scenario, the Jobs' programs run by the local job runner
   * with the conversion toolchain: onnx + int8 published; then int8 against a tolerance it fails, with TensorRT not_run.
   */
  async conversion({ client, config, native, db, registry, objects }) {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'llmhub-record-convert-'));
    const cluster = await startKubeCluster({ dataDir, fresh: true, randomPorts: true });
    const runner = await startConversionJobRunner(cluster.kubeconfigPath, path.join(dataDir, 'jobs'), config);
    const bucket = await createTenant({ db, objects, config }, 'replay');
    await registry.createModel('replay', { id: 'mlp', name: 'mlp', description: '' });
    await objects.put({ bucket, key: 'mlp/1/model.safetensors' }, seededMlp([16, 64, 4], 7));
    await registry.insertVersion(db, 'replay', {
      modelId: 'mlp',
      version: '1',
      artifactUri: `s3://${bucket}/mlp/1/model.safetensors`,
      workflowId: 'record/mlp-1',
    });
    await registry.markVersionReady('replay', 'mlp', '1', { sizeBytes: 1, checksum: 'sha256:record', etag: null });
    const taskQueue = 'record-conversion';
    const worker = await scenarioWorker({ config, db, native }, taskQueue, {
      kubeConfigOf: (c) => (c === 'local' ? cluster.kubeConfig() : undefined),
      ...localConversionDeps(config),
    });
    const conversions = new ConversionStore(db);
    const run = async (
      key: string,
      targets: ConversionInput['options']['targets'],
      tolerance: ConversionInput['options']['validation']['tolerance'],
    ) => {
      const input: ConversionInput = {
        tenantId: 'replay',
        conversionId: key,
        workflowId: `conversion/replay/${key}`,
        modelId: 'mlp',
        version: '1',
        artifactUri: `s3://${bucket}/mlp/1/model.safetensors`,
        artifactChecksum: 'sha256:record',
        memoKey: `record-${key}`,
        toolchainVersion: conversionToolchainVersion(),
        cluster: 'local',
        options: {
          targets,
          precision: 'fp16',
          validation: { sampleCount: 32, seed: 0, tolerance },
          profile: { runs: 10, batch: 1 },
        },
      };
      await conversions.claim(db, 'replay', input);
      await client.workflow.execute('convertModel', { taskQueue, workflowId: input.workflowId, args: [input] });
      return input.workflowId;
    };
    try {
      return {
        'conversion-succeeded': await run('succeeded', ['onnx', 'onnx-int8'], { onnx: 1e-4, 'onnx-int8': 5e-2 }),
        'conversion-check-failed-tensorrt-not-run': await run('check-failed', ['onnx-int8', 'tensorrt'], {
          'onnx-int8': 1e-4,
          tensorrt: 1e-2,
        }),
      };
    } finally {
      await worker.shutdown();
      await runner.stop();
      await cluster.stop();
      await rm(dataDir, { recursive: true, force: true });
    }
  },
  /**
   * Agent runs against the real filesystem MCP server over stdio, the reference model server scripting the tool
   * calls through the platform's own gateway (the API, listening for the scenario): an approved write after a read,
   * a denied write, and a write nobody answered before its 2 s deadline.
   */
  async 'agent-run'({ client, config, native, db, objects }) {
    const root = await mkdtemp(path.join(os.tmpdir(), 'llmhub-record-agent-'));
    // The filesystem server runs as the sandbox's user, which must read and write this directory.
    await chmod(root, 0o777);
    await writeFile(path.join(root, 'notes.txt'), 'The launch code word is HERON.');
    const tenants = new TenantStore(db);
    await tenants.createTenant('replay', 'replay');
    const admin = (await tenants.createApiKey('replay', 'record-admin', 'admin')).key;
    const server = await startReferenceModelServer({ name: 'replay-agent' });
    await serveModel(db, 'replay', 'agent-model', { v1: server.url }, { stable: 'v1' });
    const taskQueue = 'record-agent-run';
    const port = await freePort();
    const logger = createLogger('record', 'warn');
    const app = await buildApp({
      db,
      temporal: client,
      objects,
      taskQueue,
      logger,
      vectors: await vectorStoreFromConfig(config),
      embedders: new EmbedderRegistry(config),
      platformBucket: config.PLATFORM_BUCKET,
      clusters: clustersOf(config.LLMHUB_CLUSTERS),
    });
    await app.listen({ host: '127.0.0.1', port });
    const worker = await scenarioWorker(
      { config, db, native },
      taskQueue,
      { objects, gatewayUrl: `http://127.0.0.1:${port}` },
      logger,
    );
    const api = async (method: 'GET' | 'POST' | 'PUT', url: string, payload?: object, key?: string) => {
      const res = await app.inject({
        method,
        url,
        headers: { authorization: `Bearer ${admin}`, ...(key ? { 'idempotency-key': key } : {}) },
        ...(payload ? { payload } : {}),
      });
      if (res.statusCode >= 400) throw new Error(`${method} ${url}: ${res.statusCode} ${res.body}`);
      return res.json();
    };
    const status = (key: string): Promise<AgentRunStatus> => api('GET', `/v1/agent-runs/${key}`);
    const tool = (name: string, args: object) => `/tool ${name} ${JSON.stringify(args)}`;
    const write = (file: string) => tool('fs__write_file', { path: path.join(root, file), content: file });
    const run = async (key: string, agentId: string, input: string, decision?: 'approve' | 'deny') => {
      const { workflowId } = await api('POST', '/v1/agent-runs', { agentId, input }, key);
      if (decision) {
        const waiting = await pollFor(
          `${key} to wait for approval`,
          async () => (await status(key)).pending ?? undefined,
          120_000,
          200,
        );
        await api('POST', `/v1/agent-runs/${key}/approvals`, { actionHash: waiting.actionHash, decision });
      }
      await client.workflow.getHandle(workflowId).result();
      return workflowId as string;
    };
    try {
      // The recorded run reads without asking: the catalog entry classifies the read as read-only.
      const catalogId = await seedCatalogEntry(
        db,
        'fs',
        [require.resolve('@modelcontextprotocol/server-filesystem/dist/index.js'), root],
        { read_text_file: 'read-only' },
      );
      await api('POST', '/v1/mcp-servers', { id: 'fs', catalog: catalogId });
      const agent = {
        model: 'agent-model',
        systemPrompt: 'You are a careful assistant.',
        tools: ['fs__read_text_file', 'fs__write_file'],
      };
      await api('PUT', '/v1/agents/writer', agent);
      await api('PUT', '/v1/agents/impatient', { ...agent, approvalTimeoutSeconds: 2 });
      return {
        'agent-run-approved': await run(
          'approved',
          'writer',
          `${tool('fs__read_text_file', { path: path.join(root, 'notes.txt') })}\n${write('approved.txt')}`,
          'approve',
        ),
        'agent-run-denied': await run('denied', 'writer', write('denied.txt'), 'deny'),
        'agent-run-timed-out': await run('timed-out', 'impatient', write('timed-out.txt')),
      };
    } finally {
      await worker.shutdown();
      await app.close();
      await server.close();
      await rm(root, { recursive: true, force: true });
    }
  },
  /**
   * Fine-tunes on a local Kubernetes cluster started for the scenario, the trainer Jobs' pods run as reference-trainer
   * processes on a kwok GPU node: one straight through (20 steps), one whose first attempt stalls at step 25 (the
   * reference trainer's hold) until its node is deleted, so it resumes from the checkpoint of step 20 on a spare node.
   */
  async 'fine-tune'({ client, config, native, db, registry, objects }) {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'llmhub-record-fine-tune-'));
    const cluster = await startKubeCluster({ dataDir, fresh: true, randomPorts: true });
    const runner = await startReferenceTrainerRunner(cluster.kubeconfigPath, path.join(dataDir, 'jobs'));
    const nodes = gpuNodes(cluster.kubeConfig());
    const bucket = await createTenant({ db, objects, config }, 'replay-ft');
    const t = task(31);
    const { modelId, datasetUri } = await prepare({ objects, registry, db }, { id: 'replay-ft', bucket }, t, 'mlp-ft');
    const taskQueue = 'record-fine-tune';
    const worker = await scenarioWorker({ config, db, native }, taskQueue, {
      kubeConfigOf: (c) => (c === 'local' ? cluster.kubeConfig() : undefined),
      trainer: referenceTrainer(config, 20, 25),
      jobPodAnnotationsOf: () => ({ ...LOCAL_PROCESS_ANNOTATIONS }),
    });
    const input = (key: string, method: FineTuneInput['method'], totalSteps: number): FineTuneInput => ({
      tenantId: 'replay-ft',
      fineTuneId: key,
      cluster: 'local',
      base: { modelId, version: 'base' },
      output: { modelId, version: key },
      datasetUri,
      method,
      hyperparameters: { ...DEFAULT_HYPERPARAMETERS, ...HYPERPARAMETERS, totalSteps },
      resources: { gpuCount: 1, gpuProduct: nodes.product, cpu: '500m', memory: '1Gi' },
      priority: 0,
      maxResumptions: 2,
      jobDeadlineSeconds: 3600,
    });
    try {
      const doomed = await nodes.add(1);
      const succeeded = 'fine-tune/replay-ft/succeeded';
      await client.workflow.execute('fineTune', {
        taskQueue,
        workflowId: succeeded,
        args: [input('succeeded', 'lora', 20)],
      });
      const resumed = 'fine-tune/replay-ft/resumed';
      const handle = await client.workflow.start('fineTune', {
        taskQueue,
        workflowId: resumed,
        args: [input('resumed', 'full', 40)],
      });
      await pollFor(
        'the first attempt held at step 25',
        async () => (await handle.query(fineTuneContract.statusQuery)).progress?.step === 25,
        120_000,
        200,
      );
      await nodes.add(1);
      await nodes.k.core.deleteNode({ name: doomed });
      const status = (await handle.result()) as FineTuneStatus;
      if (status.resumptions.length !== 1 || status.resumptions[0]!.fromStep !== 20)
        throw new Error(`the resumed scenario did not resume once: ${JSON.stringify(status.resumptions)}`);
      return { 'fine-tune-succeeded': succeeded, 'fine-tune-resumed': resumed };
    } finally {
      await worker.shutdown();
      await runner.stop();
      await nodes.removeAll();
      await cluster.stop();
      await rm(dataDir, { recursive: true, force: true });
    }
  },
  /**
   * A pipeline on a local Kubernetes cluster started for the scenario: fine-tune (reference trainer) → onnx
   * conversion (the toolchain's programs) → an approver's answer → rollout served by a reference server.
   */
  async pipeline({ client, config, native, db, registry, objects }) {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'llmhub-record-pipeline-'));
    const cluster = await startKubeCluster({ dataDir, fresh: true, randomPorts: true });
    const runners = [
      await startReferenceTrainerRunner(cluster.kubeconfigPath, path.join(dataDir, 'jobs')),
      await startConversionJobRunner(cluster.kubeconfigPath, path.join(dataDir, 'jobs'), config),
    ];
    const nodes = gpuNodes(cluster.kubeConfig());
    const server = await startReferenceModelServer({ name: 'replay-pipeline' });
    const tenantId = 'replay-pl';
    const bucket = await createTenant({ db, objects, config }, tenantId);
    const { modelId, datasetUri } = await prepare(
      { objects, registry, db },
      { id: tenantId, bucket },
      task(61),
      'mlp-pl',
    );
    const endpoints = new Map([[localEndpointKey({ tenantId, modelId, version: 'ft' }), server.url]]);
    const taskQueue = 'record-pipeline';
    const worker = await scenarioWorker({ config, db, native }, taskQueue, {
      kubeConfigOf: (c) => (c === 'local' ? cluster.kubeConfig() : undefined),
      trainer: referenceTrainer(config, 0),
      ...localConversionDeps(config),
      endpointOf: localEndpoints(endpoints),
    });
    try {
      await nodes.add(1);
      const input: PipelineInput = {
        tenantId,
        pipelineId: 'succeeded',
        fineTune: {
          tenantId,
          fineTuneId: pipelineChildKey('succeeded'),
          cluster: 'local',
          base: { modelId, version: 'base' },
          output: { modelId, version: 'ft' },
          datasetUri,
          method: 'lora',
          hyperparameters: { ...DEFAULT_HYPERPARAMETERS, ...HYPERPARAMETERS, totalSteps: 20 },
          resources: { gpuCount: 1, gpuProduct: nodes.product, cpu: '500m', memory: '1Gi' },
          priority: 0,
          maxResumptions: 1,
          jobDeadlineSeconds: 3600,
        },
        conversion: { cluster: 'local', options: conversionOptionsOf({ targets: ['onnx'], profile: { runs: 5 } }) },
        rollout: {
          tenantId,
          deploymentId: pipelineChildKey('succeeded'),
          cluster: 'local',
          resources: { cpu: '500m', gpu: 0, memory: '1Gi' },
          env: { LOG_LEVEL: 'info' },
          strategy: {
            steps: [{ setWeight: 100 }],
            analysis: DEFAULT_ANALYSIS,
            readinessTimeout: '2m',
            canaryMetadata: { annotations: {}, labels: {} },
          },
          specHash: 'record',
        },
        approvalBeforeRollout: true,
        approvalTimeoutSeconds: 3600,
      };
      const workflowId = `pipeline/${tenantId}/succeeded`;
      const handle = await client.workflow.start('runPipeline', {
        taskQueue,
        workflowId,
        args: [input],
        typedSearchAttributes: [
          { key: TenantIdKey, value: tenantId },
          { key: ModelIdKey, value: modelId },
          { key: OperationKindKey, value: 'pipeline' },
        ],
      });
      await pollFor(
        'the pipeline at its approval gate',
        async () => (await handle.query(pipelineContract.statusQuery)).awaitingApproval,
        180_000,
        200,
      );
      const approval: ApprovalRequest = {
        by: 'replay-approver',
        roles: ['approver'],
        tenantId,
        decision: 'approve',
        reason: 'recorded',
      };
      await handle.executeUpdate(pipelineContract.approvalUpdate, { args: [approval] });
      const status = (await handle.result()) as PipelineStatus;
      if (status.stage !== 'succeeded')
        throw new Error(`the pipeline scenario did not succeed: ${JSON.stringify(status)}`);
      return { 'pipeline-succeeded': workflowId };
    } finally {
      await worker.shutdown();
      await Promise.all(runners.map((r) => r.stop()));
      await server.close();
      await nodes.removeAll();
      await cluster.stop();
      await rm(dataDir, { recursive: true, force: true });
    }
  },
  /**
   * A pipeline whose conversion is a memo hit on an identical conversion still running: it waits for it, takes its
   * outcome, then nobody answers its approval gate in time. The identical conversion is of the same fine-tune run
   * outside the pipeline (the reference trainer is deterministic); its row is claimed first and its workflow started
   * only once the pipeline is seen waiting.
   */
  async 'pipeline-memo-wait'({ client, config, native, db, registry, objects }) {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'llmhub-record-pipeline-wait-'));
    const cluster = await startKubeCluster({ dataDir, fresh: true, randomPorts: true });
    const runners = [
      await startReferenceTrainerRunner(cluster.kubeconfigPath, path.join(dataDir, 'jobs')),
      await startConversionJobRunner(cluster.kubeconfigPath, path.join(dataDir, 'jobs'), config),
    ];
    const nodes = gpuNodes(cluster.kubeConfig());
    const tenantId = 'replay-plw';
    const bucket = await createTenant({ db, objects, config }, tenantId);
    const { modelId, datasetUri } = await prepare(
      { objects, registry, db },
      { id: tenantId, bucket },
      task(73),
      'mlp-plw',
    );
    const taskQueue = 'record-pipeline-memo-wait';
    const worker = await scenarioWorker({ config, db, native }, taskQueue, {
      kubeConfigOf: (c) => (c === 'local' ? cluster.kubeConfig() : undefined),
      trainer: referenceTrainer(config, 0),
      ...localConversionDeps(config),
    });
    const fineTune = (key: string, version: string): FineTuneInput => ({
      tenantId,
      fineTuneId: key,
      cluster: 'local',
      base: { modelId, version: 'base' },
      output: { modelId, version },
      datasetUri,
      method: 'lora',
      hyperparameters: { ...DEFAULT_HYPERPARAMETERS, ...HYPERPARAMETERS, totalSteps: 20 },
      resources: { gpuCount: 1, gpuProduct: nodes.product, cpu: '500m', memory: '1Gi' },
      priority: 0,
      maxResumptions: 1,
      jobDeadlineSeconds: 3600,
    });
    const options = conversionOptionsOf({ targets: ['onnx'], profile: { runs: 5 } });
    try {
      await nodes.add(1);
      await client.workflow.execute('fineTune', {
        taskQueue,
        workflowId: `fine-tune/${tenantId}/src`,
        args: [fineTune('src', 'src')],
      });
      const held = await conversionInputOf(registry, {
        tenantId,
        conversionId: 'held',
        workflowId: `conversion/${tenantId}/held`,
        modelId,
        version: 'src',
        cluster: 'local',
        options,
      });
      await new ConversionStore(db).claim(db, tenantId, conversionClaimOf(held));
      const input: PipelineInput = {
        tenantId,
        pipelineId: 'waited',
        fineTune: fineTune(pipelineChildKey('waited'), 'ft'),
        conversion: { cluster: 'local', options },
        rollout: {
          tenantId,
          deploymentId: pipelineChildKey('waited'),
          cluster: 'local',
          resources: { cpu: '500m', gpu: 0, memory: '1Gi' },
          env: {},
          strategy: {
            steps: [{ setWeight: 100 }],
            analysis: DEFAULT_ANALYSIS,
            readinessTimeout: '2m',
            canaryMetadata: { annotations: {}, labels: {} },
          },
          specHash: 'record',
        },
        approvalBeforeRollout: true,
        approvalTimeoutSeconds: 2,
      };
      const workflowId = `pipeline/${tenantId}/waited`;
      const handle = await client.workflow.start('runPipeline', {
        taskQueue,
        workflowId,
        args: [input],
        typedSearchAttributes: [
          { key: TenantIdKey, value: tenantId },
          { key: ModelIdKey, value: modelId },
          { key: OperationKindKey, value: 'pipeline' },
        ],
      });
      await pollFor(
        'the pipeline waiting for the held conversion',
        async () => (await handle.query(pipelineContract.statusQuery)).steps.conversion.outcome === 'waiting',
        180_000,
        200,
      );
      await client.workflow.execute('convertModel', { taskQueue, workflowId: held.workflowId, args: [held] });
      await handle.result().catch(failedOnPurpose);
      const status = await handle.query(pipelineContract.statusQuery);
      if (
        status.steps.conversion.outcome !== 'memoized' ||
        status.steps.conversion.workflowId !== held.workflowId ||
        status.approval?.decision !== 'timed_out'
      ) {
        throw new Error(`the pipeline-memo-wait scenario did not wait and time out: ${JSON.stringify(status)}`);
      }
      return { 'pipeline-waited-for-conversion-approval-timed-out': workflowId };
    } finally {
      await worker.shutdown();
      await Promise.all(runners.map((r) => r.stop()));
      await nodes.removeAll();
      await cluster.stop();
      await rm(dataDir, { recursive: true, force: true });
    }
  },
  /**
   * A conversion cancelled while its profile step's Job runs (held by the job runner until then): it ends cancelled
   * with its Jobs stopped and nothing published; then one that publishes, both past the 'conversion-ends-cancelled' patch.
   */
  async 'conversion-cancel'({ client, config, native, db, registry, objects }) {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'llmhub-record-convert-cancel-'));
    const cluster = await startKubeCluster({ dataDir, fresh: true, randomPorts: true });
    const jobs = await startHeldConversionJobs(cluster.kubeconfigPath, dataDir, config);
    const tenantId = 'replay-cc';
    const bucket = await createTenant({ db, objects, config }, tenantId);
    await registry.createModel(tenantId, { id: 'mlp', name: 'mlp', description: '' });
    await objects.put({ bucket, key: 'mlp-cc/1/model.safetensors' }, seededMlp([16, 64, 4], 7));
    await registry.insertVersion(db, tenantId, {
      modelId: 'mlp',
      version: '1',
      artifactUri: `s3://${bucket}/mlp-cc/1/model.safetensors`,
      workflowId: 'record/mlp-cc-1',
    });
    await registry.markVersionReady(tenantId, 'mlp', '1', { sizeBytes: 1, checksum: 'sha256:record', etag: null });
    const taskQueue = 'record-conversion-cancel';
    const worker = await scenarioWorker({ config, db, native }, taskQueue, {
      kubeConfigOf: (c) => (c === 'local' ? cluster.kubeConfig() : undefined),
      ...localConversionDeps(jobs.config),
    });
    const options = conversionOptionsOf({ targets: ['onnx'], profile: { runs: 5 } });
    const start = async (key: string) => {
      const input = await conversionInputOf(registry, {
        tenantId,
        conversionId: key,
        workflowId: `conversion/${tenantId}/${key}`,
        modelId: 'mlp',
        version: '1',
        cluster: 'local',
        options,
      });
      await new ConversionStore(db).claim(db, tenantId, conversionClaimOf(input));
      return client.workflow.start('convertModel', { taskQueue, workflowId: input.workflowId, args: [input] });
    };
    try {
      const held = conversionJobName(`conversion/${tenantId}/cancelled`, 'profile-onnx');
      await jobs.hold(held);
      const cancelled = await start('cancelled');
      await pollFor(
        'the held profile step to run',
        async () => jobs.started(`llmhub-${tenantId}`, held) === 1,
        180_000,
        200,
      );
      await cancelled.cancel();
      const outcome = await cancelled.result().then(
        () => 'completed',
        (err: unknown) =>
          err instanceof WorkflowFailedError && err.cause?.name === 'CancelledFailure' ? 'cancelled' : String(err),
      );
      if (outcome !== 'cancelled') throw new Error(`the conversion-cancel scenario's run ended ${outcome}`);
      await jobs.release(held);
      const published = await start('published');
      await published.result();
      return {
        'conversion-cancelled-mid-step': cancelled.workflowId,
        'conversion-published-patched': published.workflowId,
      };
    } finally {
      await worker.shutdown();
      await jobs.stop();
      await cluster.stop();
      await rm(dataDir, { recursive: true, force: true });
    }
  },
  /** A tenant's deletion on a real local Kubernetes cluster started for the scenario: its namespace, then its rows. */
  async 'tenant-deletion'({ client, config, native, db }) {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'llmhub-record-kube-'));
    const cluster = await startKubeCluster({ dataDir, fresh: true, randomPorts: true });
    const tenants = new TenantStore(db);
    await tenants.createTenant('replay-gone', 'replay-gone');
    await tenants.setSuspended('replay-gone', true);
    await cluster
      .kubeConfig()
      .makeApiClient(CoreV1Api)
      .createNamespace({ body: { metadata: { name: defaultNamespaceOf('replay-gone') } } });
    const taskQueue = 'record-tenant-deletion';
    const worker = await scenarioWorker({ config, db, native }, taskQueue, {
      kubeConfigOf: (c) => (c === 'local' ? cluster.kubeConfig() : undefined),
    });
    try {
      const input: TenantDeletionInput = { tenantId: 'replay-gone', clusters: ['local'] };
      const handle = await client.workflow.start(tenantDeletionContract.workflowType, {
        taskQueue,
        workflowId: 'tenant-deletion/replay-gone/delete',
        args: [input],
      });
      await handle.result();
      return { 'tenant-deletion-deleted': handle.workflowId };
    } finally {
      await worker.shutdown();
      await cluster.stop();
      await rm(dataDir, { recursive: true, force: true });
    }
  },
  /**
   * Batches through a real gateway: one to completion, one cancelled mid-run (a slow model server), and one that
   * continues as new after each page (pagesPerRun: 1), whose first and last runs are both recorded.
   */
  async batch({ client, config, native, db, objects }) {
    const tenantId = 'replay-batch';
    const bucket = await createTenant({ db, objects, config }, tenantId);
    const developer = (await new TenantStore(db).createApiKey(tenantId, 'record-developer', 'developer')).key;
    const fast = await startReferenceModelServer({ name: 'replay-batch' });
    const slow = await startReferenceModelServer({ name: 'replay-batch-slow', faults: { latencyMs: 200 } });
    await serveModel(db, tenantId, 'fast', { v1: fast.url }, { stable: 'v1' });
    await serveModel(db, tenantId, 'slow', { v1: slow.url }, { stable: 'v1' });
    const taskQueue = 'record-batch';
    const port = await freePort();
    const logger = createLogger('record', 'warn');
    const app = await buildApp({
      db,
      temporal: client,
      objects,
      taskQueue,
      logger,
      vectors: await vectorStoreFromConfig(config),
      embedders: new EmbedderRegistry(config),
      platformBucket: config.PLATFORM_BUCKET,
      clusters: clustersOf(config.LLMHUB_CLUSTERS),
    });
    await app.listen({ host: '127.0.0.1', port });
    const worker = await scenarioWorker(
      { config, db, native },
      taskQueue,
      { objects, gatewayUrl: `http://127.0.0.1:${port}` },
      logger,
    );
    const api = async (method: 'GET' | 'POST', url: string, payload?: object) => {
      const res = await app.inject({ method, url, headers: { authorization: `Bearer ${developer}` }, payload });
      if (res.statusCode >= 400) throw new Error(`${method} ${url}: ${res.statusCode} ${res.body}`);
      return res.json();
    };
    const upload = async (content: string): Promise<string> => {
      const { payload, contentType } = await multipart(content);
      const res = await app.inject({
        method: 'POST',
        url: '/v1/files',
        headers: { authorization: `Bearer ${developer}`, 'content-type': contentType },
        payload,
      });
      if (res.statusCode !== 200) throw new Error(`upload: ${res.statusCode} ${res.body}`);
      return res.json().id;
    };
    const create = async (model: string, n: number): Promise<string> =>
      (
        await api('POST', '/v1/batches', {
          input_file_id: await upload(chatLines(model, n)),
          endpoint: '/v1/chat/completions',
          completion_window: '24h',
        })
      ).id;
    try {
      await pollFor(
        'the gateway to route fast',
        async () =>
          (
            await app.inject({
              method: 'POST',
              url: '/v1/embeddings',
              headers: { authorization: `Bearer ${developer}` },
              payload: { model: 'fast', input: 'x' },
            })
          ).statusCode === 200,
        60_000,
        100,
      );
      await pollFor(
        'the gateway to route slow',
        async () =>
          (
            await app.inject({
              method: 'POST',
              url: '/v1/embeddings',
              headers: { authorization: `Bearer ${developer}` },
              payload: { model: 'slow', input: 'x' },
            })
          ).statusCode === 200,
        60_000,
        100,
      );
      const completed = await create('fast', 250);
      await client.workflow.getHandle(workflowId('batch', tenantId, completed)).result();

      // A page that finds a line rewritten after upload (same size, so the start's check passes) fails the batch.
      const content = chatLines('fast', 600);
      const rewritten = content.split('\n');
      rewritten[249] = 'x'.repeat(rewritten[249]!.length);
      const fileId = await upload(content);
      await objects.put({ bucket, key: fileKey(fileId) }, rewritten.join('\n'));
      const failed = (
        await api('POST', '/v1/batches', {
          input_file_id: fileId,
          endpoint: '/v1/chat/completions',
          completion_window: '24h',
        })
      ).id;
      await client.workflow
        .getHandle(workflowId('batch', tenantId, failed))
        .result()
        .catch(failedOnPurpose);

      const cancelled = await create('slow', 600);
      await pollFor('some slow lines to be answered', async () => slow.received() >= 60, 120_000, 100);
      await api('POST', `/v1/batches/${cancelled}/cancel`);
      await client.workflow.getHandle(workflowId('batch', tenantId, cancelled)).result();

      // Started here rather than by the API, to continue as new after every page.
      const continued = newObjectId('batch_');
      // Three pages, so the recorded history has a run between the first and the last.
      const lines = BATCH_PAGE_LINES * 2 + 50;
      const inputFileId = await upload(chatLines('fast', lines));
      const expiresAt = Date.now() + 24 * 3_600_000;
      await new BatchStore(db).createBatch(tenantId, {
        id: continued,
        endpoint: '/v1/chat/completions',
        inputFileId,
        completionWindow: '24h',
        metadata: null,
        createdBy: 'record',
        total: lines,
        expiresAt,
      });
      const input: BatchInput = {
        tenantId,
        batchId: continued,
        bucket,
        endpoint: '/v1/chat/completions',
        inputFileId,
        subject: 'record',
        roles: ['developer'],
        expiresAt,
        pagesInFlight: 1,
        pagesPerRun: 1,
      };
      const handle = await client.workflow.start(batchContract.workflowType, {
        taskQueue,
        workflowId: workflowId('batch', tenantId, continued),
        args: [input],
      });
      await handle.result();
      await save(client, handle.workflowId, 'batch-continued-as-new-first-run', handle.firstExecutionRunId);
      // Batches the API starts have their page count in the input, so their first pages start beside batchStarted
      // (PAGES_BESIDE_START_PATCH); batch-completed, batch-cancelled-mid-run and batch-page-failed were recorded before
      // it, and the continued-as-new batch (its input has no page count) still waits for batchStarted.
      return {
        'batch-completed-pages-beside-start': workflowId('batch', tenantId, completed),
        'batch-cancelled-pages-beside-start': workflowId('batch', tenantId, cancelled),
        'batch-page-failed-pages-beside-start': workflowId('batch', tenantId, failed),
        'batch-continued-as-new-last-run': handle.workflowId,
      };
    } finally {
      await worker.shutdown();
      await app.close();
      await fast.close();
      await slow.close();
    }
  },
  /** A catalog server's tools listed in the worker's sandbox, and an entry that is gone by the time the worker looks. */
  async 'mcp-discovery'({ client, taskQueue, db }) {
    const root = await mkdtemp(path.join(os.tmpdir(), 'llmhub-record-mcp-'));
    try {
      const catalogId = await seedCatalogEntry(db, 'lying', [
        fixture('mcp-lying-server.mjs'),
        path.join(root, 'calls.log'),
      ]);
      const run = async (key: string, id: string) => {
        const workflowId = `mcp-discovery/${PLATFORM_OWNER}/${key}`;
        await client.workflow
          .execute(MCP_DISCOVERY_WORKFLOW, { taskQueue, workflowId, args: [{ catalogId: id, owner: PLATFORM_OWNER }] })
          .catch(failedOnPurpose);
        return workflowId;
      };
      return {
        'mcp-discovery-listed': await run('listed', catalogId),
        'mcp-discovery-entry-gone': await run('entry-gone', 'no-such-entry'),
      };
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  },
};

async function recordScenarios(): Promise<void> {
  await withScratchStack('record', async ({ config, db, client, native }) => {
    const objects = s3StoreFromConfig(config);
    const registry = new RegistryStore(db);
    const taskQueue = 'record';
    const worker = await scenarioWorker({ config, db, native }, taskQueue, { objects });
    try {
      const only = process.argv.includes('--only') ? process.argv[process.argv.indexOf('--only') + 1] : undefined;
      for (const [scenario, runScenario] of Object.entries(scenarios).filter(([name]) => !only || name === only)) {
        console.log(`scenario ${scenario}`);
        for (const [name, id] of Object.entries(
          await runScenario({ client, taskQueue, objects, registry, db, config, native }),
        ))
          await save(client, id, name);
      }
    } finally {
      await worker.shutdown();
    }
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      'workflow-id': { type: 'string' },
      name: { type: 'string' },
      scenarios: { type: 'boolean' },
      only: { type: 'string' },
    },
  });
  if (values.scenarios) return recordScenarios();
  if (!values['workflow-id'] || !values.name) throw new Error('usage: --workflow-id <id> --name <name> | --scenarios');
  const connection = await Connection.connect({ address: process.env.TEMPORAL_ADDRESS ?? '127.0.0.1:7233' });
  try {
    await save(
      new Client({ connection, namespace: process.env.TEMPORAL_NAMESPACE ?? 'default' }),
      values['workflow-id'],
      values.name,
    );
  } finally {
    await connection.close();
  }
}

runScript(main);
