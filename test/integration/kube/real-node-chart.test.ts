import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { AppsV1Api, BatchV1Api, CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import { Client as PgClient } from 'pg';
import { defaultNamespaceOf, servingSelector } from '../../../activities/kubernetes/manifests';
import { loadConfig } from '../../../common/config';
import { createPool } from '../../../common/store/pool';
import { TenantStore } from '../../../common/store/tenants';
import { s3StoreFromConfig } from '../../../common/objectstore';
import { testKubeConfig, KUBECONFIG_ENV } from '../../../deploy/dev/kube/cluster';
import { eventually, uniqueId } from '../../support/platform';
import { forwardToPods, inputTaggedImage, realNode, realNodeHost, type RealNodeHost } from '../../support/real-node';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const run = (cmd: string, args: string[]) => promisify(execFile)(cmd, args, { cwd: ROOT, maxBuffer: 1 << 24 });

/**
 * The platform on the platform: deploy/helm/llmhub installed onto the local cluster's real node from the project's
 * own images, against this run's Temporal, PostgreSQL (a database of its own, which the chart's migration hook Job
 * creates the schema of) and S3, reached by the pods through forwarders on the host's address on its link to the
 * node. Then the README's sequence through the chart's Services: a tenant, register a model, deploy it on the node,
 * chat through the gateway Service.
 *
 * In `.ci/run`: scripts/test.sh builds the platform image in a phase, tagged by a hash of its inputs
 * (deploy/dev/kube/image.sh), so a run that changed none of them reuses it; `npm run chart:test` runs this file alone.
 */
const config = loadConfig();
const kc = testKubeConfig();
const core = kc.makeApiClient(CoreV1Api);
const apps = kc.makeApiClient(AppsV1Api);
const batch = kc.makeApiClient(BatchV1Api);
const RELEASE = 'llmhub';
const id = randomBytes(3).toString('hex');
// Not `llmhub-<tenant>`: that is the tenant's namespace, where the worker has rights, and never the release's.
const ns = `release-${id}`;
const database = `chart_${id}`;
const tenantId = `chart-${id}`;

let node: RealNodeHost;
const forwarders: { close(): Promise<void> }[] = [];
let helm: string;
let kubectl: (...args: string[]) => Promise<string>;
let chartDbUrl: string;

const portOf = (url: string) => Number(new URL(url.includes('://') ? url : `tcp://${url}`).port);
const forward = async (port: number) => {
  const f = await forwardToPods(node.hostAddress, { host: '127.0.0.1', port });
  forwarders.push(f);
  return f;
};

/** A kubeconfig for the chart's workers: the API server through its forwarder, as the worker's own ServiceAccount. */
function workerKubeconfig(server: string, token: string): string {
  const cluster = kc.getCurrentCluster()!;
  const out = new KubeConfig();
  out.loadFromOptions({
    clusters: [{ name: 'real', server, caData: cluster.caData, tlsServerName: 'localhost' }],
    users: [{ name: 'worker', token }],
    contexts: [{ name: 'real', cluster: 'real', user: 'worker' }],
    currentContext: 'real',
  });
  return out.exportConfig();
}

beforeAll(async () => {
  node = await realNodeHost(kc);
  helm = path.join((await run('bash', ['deploy/dev/helm/build.sh', '--print-dir'])).stdout.trim(), 'bin', 'helm');
  const { modelServerImage, kubectl: k } = await realNode();
  kubectl = k;
  const tag = (await inputTaggedImage('platform')).split(':').at(-1)!;

  // A database of the release's own, so its migration Job has a schema to create.
  const admin = new PgClient({ connectionString: config.DATABASE_URL });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${database}`);
  await admin.end();
  const [pg, temporal, s3, api] = await Promise.all([
    forward(portOf(config.DATABASE_URL)),
    forward(portOf(config.TEMPORAL_ADDRESS)),
    forward(portOf(config.S3_ENDPOINT!)),
    forward(Number(new URL(kc.getCurrentCluster()!.server).port)),
  ]);
  const podDbUrl = new URL(config.DATABASE_URL);
  podDbUrl.host = `${node.hostAddress}:${pg.port}`;
  podDbUrl.pathname = `/${database}`;
  chartDbUrl = Object.assign(new URL(config.DATABASE_URL), { pathname: `/${database}` }).toString();

  await core.createNamespace({ body: { metadata: { name: ns } } });
  const secret = (name: string, data: Record<string, string>) =>
    core.createNamespacedSecret({ namespace: ns, body: { metadata: { name }, stringData: data } });
  await secret('llmhub-postgresql', { url: podDbUrl.toString() });
  await secret('llmhub-s3-root', {
    'access-key-id': config.S3_ACCESS_KEY_ID!,
    'secret-access-key': config.S3_SECRET_ACCESS_KEY!,
  });

  const onNode = { nodeSelector: node.placement.nodeSelector, tolerations: node.placement.tolerations };
  const small = { requests: { cpu: '50m', memory: '128Mi' }, limits: { memory: '768Mi' } };
  const values = {
    image: { repository: 'docker.io/llmhub/platform', tag, pullPolicy: 'IfNotPresent' },
    temporal: { address: `${node.hostAddress}:${temporal.port}`, namespace: config.TEMPORAL_NAMESPACE },
    postgresql: { existingSecret: 'llmhub-postgresql', key: 'url' },
    s3: {
      endpoint: s3.url('http'),
      region: config.S3_REGION,
      forcePathStyle: true,
      platformBucket: config.PLATFORM_BUCKET,
      existingSecret: 'llmhub-s3-root',
    },
    tenantS3: { provider: 'versitygw' },
    vectorStore: { type: 'lancedb' },
    clusters: {
      local: null,
      real: { kubeconfigSecret: 'llmhub-cluster-real', serviceAddress: 'clusterIP', ...onNode },
    },
    env: { LLMHUB_MODEL_SERVER_IMAGE: modelServerImage, LOG_LEVEL: 'info' },
    api: { replicas: 1, resources: small, ...onNode },
    gateway: { replicas: 1, resources: small, autoscaling: { enabled: false }, ...onNode },
    workers: [{ name: 'platform', taskQueue: `chart-${id}` }],
    workerDefaults: { replicas: 1, resources: small, autoscaling: { enabled: false }, ...onNode },
    migrations: { resources: small, ...onNode },
    ingress: { enabled: false },
  };
  const dir = await mkdtemp(path.join(process.env.LLMHUB_TEST_DATA!, 'chart-'));
  await writeFile(path.join(dir, 'values.json'), JSON.stringify(values));

  // The workers' kubeconfig holds their ServiceAccount's token, which exists once helm applied the chart: the worker
  // pods wait for the Secret (a missing Secret volume holds a pod in ContainerCreating), helm waits for the pods.
  const install = run(helm, [
    ...['install', RELEASE, 'deploy/helm/llmhub', '--namespace', ns, '-f', path.join(dir, 'values.json')],
    ...['--kubeconfig', process.env[KUBECONFIG_ENV]!, '--wait', '--timeout', '15m'],
  ]);
  const account = `${RELEASE}-worker`;
  await eventually(`ServiceAccount ${ns}/${account}`, () =>
    core.readNamespacedServiceAccount({ name: account, namespace: ns }).then(
      () => true,
      () => false,
    ),
  );
  const { status } = await core.createNamespacedServiceAccountToken({
    name: account,
    namespace: ns,
    body: { spec: { audiences: [], expirationSeconds: 3600 } },
  });
  await secret('llmhub-cluster-real', {
    kubeconfig: workerKubeconfig(`https://${node.hostAddress}:${api.port}`, status!.token),
  });
  await install;
}, 1_200_000);

afterAll(async () => {
  if (helm) await run(helm, ['uninstall', RELEASE, '--namespace', ns, '--kubeconfig', process.env[KUBECONFIG_ENV]!]);
  for (const name of [ns, defaultNamespaceOf(tenantId)]) await core.deleteNamespace({ name }).catch(() => undefined);
  await Promise.all(forwarders.map((f) => f.close()));
});

/**
 * A Service's address once it answers: its pods being Ready does not mean kube-proxy has programmed its rules yet, and
 * until then the node answers a connect with "network unreachable" (CI saw ENETUNREACH on the first call).
 */
const serviceUrl = async (role: 'api' | 'gateway') => {
  const svc = await core.readNamespacedService({ name: `${RELEASE}-${role}`, namespace: ns });
  const base = `http://${svc.spec!.clusterIP}:80`;
  await eventually(`the ${role} Service answering at ${base}`, async () => (await fetch(`${base}/healthz`)).ok);
  return base;
};
const call = async (base: string, method: string, url: string, key: string, body?: unknown) => {
  const res = await fetch(`${base}${url}`, {
    method,
    headers: {
      authorization: `Bearer ${key}`,
      'content-type': 'application/json',
      ...(method === 'POST' ? { 'idempotency-key': uniqueId('k') } : {}),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json().catch(() => null)) as Record<string, any> }; // eslint-disable-line @typescript-eslint/no-explicit-any
};

describe('the chart on the real node', () => {
  it('migrates its database in the hook Job and runs api, gateway and worker pods Ready on the node', async () => {
    // The hook Job is deleted once it succeeded (hook-succeeded); the schema it made is what it leaves.
    const db = createPool(chartDbUrl, 1);
    const { rows } = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM schema_migrations');
    await db.end();
    expect(rows[0]!.n).toBeGreaterThan(0);
    for (const role of ['api', 'gateway', 'worker-platform']) {
      const d = await apps.readNamespacedDeployment({ name: `${RELEASE}-${role}`, namespace: ns });
      expect(d.status?.readyReplicas).toBe(1);
      const pods = (
        await core.listNamespacedPod({
          namespace: ns,
          labelSelector: Object.entries(d.spec!.selector.matchLabels!)
            .map(([k, v]) => `${k}=${v}`)
            .join(','),
        })
      ).items;
      expect(pods.map((p) => p.spec?.nodeName)).toEqual([node.name]);
      expect(pods[0]!.status?.containerStatuses?.[0]?.containerID).toMatch(/^containerd:\/\//);
    }
    expect((await batch.listNamespacedJob({ namespace: ns })).items).toHaveLength(0);
  });

  it("runs the README's sequence through the chart's Services: a tenant, register, deploy on the node, chat", async () => {
    const api = await serviceUrl('api');
    const gateway = await serviceUrl('gateway');
    const pool = createPool(chartDbUrl, 1);
    const operator = (await new TenantStore(pool).createPlatformKey('chart-test')).key;
    await pool.end();
    const created = await call(api, 'POST', '/v1/platform/tenants', operator, { id: tenantId });
    expect(created.status).toBe(201);
    const key = created.body.adminKey.key as string;
    const bucket = created.body.tenant.storage.bucket as string;

    const objects = s3StoreFromConfig(config);
    await objects.put({ bucket, key: 'demo/model.safetensors' }, Buffer.from('weights of the demo'));
    expect((await call(api, 'POST', '/v1/models', key, { id: 'demo', name: 'Demo' })).status).toBe(201);
    const version = await call(api, 'POST', '/v1/models/demo/versions', key, {
      version: '1',
      artifactUri: `s3://${bucket}/demo/model.safetensors`,
    });
    expect(version.status).toBe(202);
    await eventually('version 1 ready', async () => {
      const v = await call(api, 'GET', '/v1/models/demo/versions/1', key);
      return v.body?.state === 'ready';
    });

    const deploy = await call(api, 'POST', '/v1/deploy', key, {
      modelId: 'demo',
      version: '1',
      cluster: 'real',
      resources: { cpu: '100m', memory: '256Mi', gpu: 0 },
      env: { REFERENCE_MODEL_LOG_REQUESTS: '1' },
    });
    expect(deploy.status).toBe(202);
    let last: unknown;
    const deployed = await eventually(
      'the deployment promoted',
      async () => {
        const d = await call(api, 'GET', `/v1/deployments/${deploy.body.deploymentId}`, key);
        last = d.body;
        return ['promoted', 'rolled_back'].includes(d.body?.phase) && d.body;
      },
      600_000,
    ).catch(async (err: Error) => {
      // What the rollout waited on: the worker's log and the version's pods on the node.
      const seen = await Promise.all([
        kubectl('logs', '-n', ns, `deploy/${RELEASE}-worker-platform`, '--tail=60'),
        kubectl('get', 'pods,events', '-n', defaultNamespaceOf(tenantId), '-o', 'wide'),
      ]).catch((e: Error) => [e.message]);
      throw new Error(`${err.message}; last status: ${JSON.stringify(last)}\n${seen.join('\n')}`);
    });
    expect(deployed.phase).toBe('promoted');

    // The model server's own request log (kubectl logs): the rollout's probe is there already; the chat adds one.
    const chatsLogged = async () =>
      (
        await kubectl(
          ...['logs', '-n', defaultNamespaceOf(tenantId), '--tail=-1', '--all-containers', '-l'],
          Object.entries(servingSelector(tenantId, 'demo', '1'))
            .map(([k, v]) => `${k}=${v}`)
            .join(','),
        )
      )
        .split('\n')
        .filter((l) => l.includes('"msg":"request"') && l.includes('"path":"/v1/chat/completions"')).length;
    const before = await chatsLogged();
    // The gateway pod learns the route from the database; it answers once it has it.
    const chat = await eventually('a chat answered through the gateway Service', async () => {
      const res = await call(gateway, 'POST', '/v1/chat/completions', key, {
        model: 'demo',
        messages: [{ role: 'user', content: 'hello' }],
      });
      return res.status === 200 && res.body;
    });
    expect(chat.choices[0].message.content).toBe('Reference reply to: hello');
    expect(await chatsLogged()).toBeGreaterThan(before);
  }, 900_000);
});
