import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { KubeConfig, KubernetesObjectApi, loadAllYaml, type KubernetesObject } from '@kubernetes/client-node';
import { deleteIfPresent, serverSideApply } from '../../../activities/kubernetes/client';
import { ensureTenantNamespace, tenantNamespacePolicyOf } from '../../../activities/kubernetes/tenant-namespace';
import { tenantS3Env } from '../../../activities/kubernetes/tenant-s3';
import { loadConfig } from '../../../common/config';
import { KUBECONFIG_ENV } from '../../../deploy/dev/kube/cluster';
import {
  IMAGE,
  createNamespace,
  deleteNamespace,
  kube,
  tenantNamespaceDeps,
  uniqueName,
  waitFor,
  type Kube,
} from './kube-helpers';

/**
 * deploy/helm/llmhub: helm lint, helm template with the default values and the CI values files, a server-side dry-run
 * apply of every rendering on the local control plane (with the prometheus-operator and Gateway API CRDs installed, so
 * ServiceMonitor, PrometheusRule and HTTPRoute are validated too), and the worker's RBAC applied for real and checked
 * as the worker's ServiceAccount.
 */
const ROOT = path.resolve(__dirname, '..', '..', '..');
const CHART = path.join(ROOT, 'deploy', 'helm', 'llmhub');
const RELEASE = 'llmhub';
const VALUES: Record<string, string[]> = {
  default: [],
  'temporal-cloud': ['ci/temporal-cloud.yaml'],
  'self-hosted-mtls': ['ci/self-hosted-mtls.yaml'],
  'gateway-api': ['ci/gateway-api.yaml'],
};

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function exec(cmd: string, args: string[], input?: string): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
    child.stdin.end(input ?? '');
  });
}

async function ok(cmd: string, args: string[], input?: string): Promise<string> {
  const r = await exec(cmd, args, input);
  if (r.code !== 0)
    throw new Error(`${path.basename(cmd)} ${args.join(' ')} exited ${r.code}:\n${r.stderr}${r.stdout}`);
  return r.stdout;
}

type Obj = KubernetesObject & Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

describe('the Helm chart', () => {
  let k: Kube;
  let helm: string;
  let kubectl: string;
  let crds: string;
  let ns: string;
  const tenantNamespaces: string[] = [];
  const clusterScoped: Obj[] = [];
  const kc = () => ['--kubeconfig', process.env[KUBECONFIG_ENV]!];

  const render = async (set: string): Promise<{ yaml: string; docs: Obj[] }> => {
    const files = VALUES[set]!.flatMap((f) => ['-f', path.join(CHART, f)]);
    const yaml = await ok(helm, ['template', RELEASE, CHART, '--namespace', ns, ...files]);
    return { yaml, docs: (loadAllYaml(yaml) as (Obj | null)[]).filter((d): d is Obj => !!d) };
  };
  const find = (docs: Obj[], kind: string, name: string): Obj => {
    const d = docs.find((o) => o.kind === kind && o.metadata?.name === name);
    if (!d) throw new Error(`no ${kind} ${name} in ${docs.map((o) => `${o.kind}/${o.metadata?.name}`).join(', ')}`);
    return d;
  };
  const container = (d: Obj) => d.spec.template.spec.containers[0];
  const envOf = (d: Obj, name: string) => container(d).env.find((e: { name: string }) => e.name === name);

  beforeAll(async () => {
    await ok('bash', ['deploy/dev/helm/build.sh']);
    const dir = (await ok('bash', ['deploy/dev/helm/build.sh', '--print-dir'])).trim();
    helm = path.join(dir, 'bin', 'helm');
    crds = path.join(dir, 'crds');
    kubectl = path.join((await ok('bash', ['deploy/dev/kube/build.sh', '--print-bin-dir'])).trim(), 'kubectl');
    k = kube();
    ns = await createNamespace(k, 'llmhub-rel');
    // The CRDs the optional ServiceMonitor, PrometheusRule and HTTPRoute need, so dry-run validates those objects.
    await ok(kubectl, [
      ...kc(),
      'apply',
      '--server-side',
      '--force-conflicts',
      '-f',
      path.join(crds, 'prometheus-operator'),
      '-f',
      path.join(crds, 'gateway-api'),
    ]);
    await ok(kubectl, [
      ...kc(),
      'wait',
      '--for=condition=Established',
      '--timeout=120s',
      'crd/servicemonitors.monitoring.coreos.com',
      'crd/prometheusrules.monitoring.coreos.com',
      'crd/httproutes.gateway.networking.k8s.io',
    ]);
  }, 900_000);

  afterAll(async () => {
    for (const o of clusterScoped)
      await exec(kubectl, [...kc(), 'delete', '--ignore-not-found', `${o.kind}/${o.metadata!.name}`]);
    if (k) for (const n of [...tenantNamespaces, ns]) if (n) await deleteNamespace(k, n);
  });

  test.each(Object.keys(VALUES))('helm lint --strict passes with the %s values', async (set) => {
    const files = VALUES[set]!.flatMap((f) => ['-f', path.join(CHART, f)]);
    const out = await ok(helm, ['lint', '--strict', CHART, ...files]);
    expect(out).toMatch(/1 chart\(s\) linted, 0 chart\(s\) failed/);
  });

  test.each(Object.keys(VALUES))(
    'the %s rendering passes a server-side dry-run apply on the local API server',
    async (set) => {
      const { yaml, docs } = await render(set);
      const r = await exec(kubectl, [...kc(), 'apply', '--dry-run=server', '--namespace', ns, '-f', '-'], yaml);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      // One "(server dry run)" line per object: nothing was skipped.
      expect(r.stdout.trim().split('\n')).toHaveLength(docs.length);
      expect(
        r.stdout
          .trim()
          .split('\n')
          .every((l) => l.endsWith('(server dry run)')),
      ).toBe(true);
    },
  );

  test('the dry run checks the monitoring objects against the CRDs: a malformed one is refused', async () => {
    const { docs } = await render('temporal-cloud');
    const monitor = find(docs, 'ServiceMonitor', 'llmhub');
    monitor.spec.endpoints[0].authorization.credentials = 'llmhubop_inline';
    const rule = find(docs, 'PrometheusRule', 'llmhub');
    delete rule.spec.groups[0].rules[0].expr;
    for (const bad of [monitor, rule]) {
      const r = await exec(kubectl, [...kc(), 'apply', '--dry-run=server', '-n', ns, '-f', '-'], JSON.stringify(bad));
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(bad.kind === 'ServiceMonitor' ? /credentials/ : /expr/);
    }
  });

  test('default values: roles, migrations hook, routing, autoscaling, disruption budgets, pod security', async () => {
    const { docs } = await render('default');
    const api = find(docs, 'Deployment', 'llmhub-api');
    const gateway = find(docs, 'Deployment', 'llmhub-gateway');
    const worker = find(docs, 'Deployment', 'llmhub-worker-platform');
    expect(container(api).args).toEqual(['dist/roles/api.js']);
    expect(container(gateway).args).toEqual(['dist/roles/gateway.js']);
    expect(container(worker).args).toEqual(['dist/roles/worker.js']);
    expect(envOf(worker, 'TEMPORAL_TASK_QUEUE').value).toBe('llmhub-platform');
    for (const d of [api, gateway, worker]) {
      const pod = d.spec.template.spec;
      expect(container(d).image).toBe('llmhub/platform:0.1.0');
      expect(pod.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 10001 });
      expect(container(d).securityContext).toMatchObject({
        readOnlyRootFilesystem: true,
        allowPrivilegeEscalation: false,
      });
      expect(pod.volumes).toContainEqual({ name: 'tmp', emptyDir: {} });
      expect(container(d).volumeMounts).toContainEqual({ name: 'tmp', mountPath: '/tmp' });
      expect(envOf(d, 'DATABASE_URL').valueFrom.secretKeyRef).toEqual({ name: 'llmhub-postgresql', key: 'url' });
    }
    for (const d of [api, gateway]) {
      expect(container(d).livenessProbe.httpGet.path).toBe('/healthz');
      expect(container(d).readinessProbe.httpGet.path).toBe('/readyz');
      expect(d.spec.template.spec.automountServiceAccountToken).toBe(false);
    }
    expect(worker.spec.template.spec.serviceAccountName).toBe('llmhub-worker');
    // Until the worker serves /metrics (after bundling its workflows) the startup probe holds off the liveness probe.
    expect(container(worker).startupProbe.httpGet).toEqual({ path: '/metrics', port: 'metrics' });

    const migrations = find(docs, 'Job', 'llmhub-migrations');
    expect(migrations.metadata!.annotations!['helm.sh/hook']).toBe('pre-install,pre-upgrade');
    expect(container(migrations).args).toEqual(['dist/common/store/migrate-cli.js']);

    const hpas = docs.filter((d) => d.kind === 'HorizontalPodAutoscaler').map((d) => d.spec.scaleTargetRef.name);
    expect(hpas.sort()).toEqual(['llmhub-gateway', 'llmhub-worker-platform']);
    expect(api.spec.replicas).toBe(2);
    expect(gateway.spec.replicas).toBeUndefined(); // the HPA owns it
    const pdbs = docs.filter((d) => d.kind === 'PodDisruptionBudget').map((d) => d.metadata!.name);
    expect(pdbs.sort()).toEqual(['llmhub-api', 'llmhub-gateway', 'llmhub-worker-platform']);
    expect(docs.filter((d) => d.kind === 'NetworkPolicy')).toHaveLength(3);

    const ingress = find(docs, 'Ingress', 'llmhub');
    const routes = Object.fromEntries(
      ingress.spec.rules[0].http.paths.map(
        (p: { path: string; pathType: string; backend: { service: { name: string } } }) => [
          `${p.pathType} ${p.path}`,
          p.backend.service.name,
        ],
      ),
    );
    expect(routes).toEqual({
      'Prefix /v1/chat/completions': 'llmhub-gateway',
      'Prefix /v1/completions': 'llmhub-gateway',
      'Prefix /v1/embeddings': 'llmhub-gateway',
      // The model list and registration only, not /v1/models/<id>/...
      'Exact /v1/models': 'llmhub-gateway',
      'Prefix /': 'llmhub-api',
    });
    // No KEK by default: providers and budget webhooks are off until a Secret is named.
    expect(envOf(api, 'LLMHUB_KEK_FILE')).toBeUndefined();
    // Off by default: they need the operator's CRDs.
    expect(docs.some((d) => d.kind === 'ServiceMonitor' || d.kind === 'PrometheusRule')).toBe(false);
  });

  test('Temporal Cloud values: API key, two worker queues, a second cluster, ServiceMonitor with the operator key, rules', async () => {
    const { docs } = await render('temporal-cloud');
    const config = find(docs, 'ConfigMap', 'llmhub').data;
    expect(config).toMatchObject({
      TEMPORAL_ADDRESS: 'llmhub-prod.a1b2c.tmprl.cloud:7233',
      TEMPORAL_NAMESPACE: 'llmhub-prod.a1b2c',
      TEMPORAL_TLS: 'true',
      VECTOR_STORE: 'qdrant',
      OTEL_EXPORTER_OTLP_ENDPOINT: 'http://otel-collector.observability.svc:4318',
      LLMHUB_PLATFORM_NAMESPACE: ns,
    });
    expect(JSON.parse(config.LLMHUB_CLUSTERS)).toEqual({
      local: {},
      'gpu-east': {
        kubeconfig: '/etc/llmhub/clusters/gpu-east/kubeconfig',
        defaultResources: { cpu: '8', memory: '64Gi', gpu: 1 },
        nodeSelector: { pool: 'gpu-batch' },
        tolerations: [{ key: 'pool', value: 'gpu-batch', operator: 'Equal', effect: 'NoSchedule' }],
      },
    });
    const gpu = find(docs, 'Deployment', 'llmhub-worker-gpu-jobs');
    expect(envOf(gpu, 'TEMPORAL_TASK_QUEUE').value).toBe('llmhub-gpu-jobs');
    expect(envOf(gpu, 'TEMPORAL_API_KEY').valueFrom.secretKeyRef).toEqual({
      name: 'llmhub-temporal-api-key',
      key: 'api-key',
    });
    expect(gpu.spec.template.spec.volumes).toContainEqual(
      expect.objectContaining({
        name: 'cluster-gpu-east',
        secret: expect.objectContaining({ secretName: 'llmhub-cluster-gpu-east' }),
      }),
    );
    // No platform S3 keys: IRSA on the worker's ServiceAccount.
    expect(envOf(gpu, 'S3_ACCESS_KEY_ID')).toBeUndefined();
    expect(find(docs, 'ServiceAccount', 'llmhub-worker').metadata!.annotations).toEqual({
      'eks.amazonaws.com/role-arn': 'arn:aws:iam::123456789012:role/llmhub-platform',
    });
    const monitor = find(docs, 'ServiceMonitor', 'llmhub');
    expect(monitor.spec.endpoints[0].authorization).toEqual({
      type: 'Bearer',
      credentials: { name: 'llmhub-metrics-operator-key', key: 'key' },
    });
    expect(find(docs, 'ServiceMonitor', 'llmhub-workers').spec.endpoints[0].port).toBe('metrics');
    const rules = find(docs, 'PrometheusRule', 'llmhub').spec.groups;
    // The rule groups of the project's alert rules file, as they are.
    const file = loadAllYaml(readFileSync(path.join(CHART, 'files', 'prometheus', 'alerts.yaml'), 'utf8'))[0] as {
      groups: unknown[];
    };
    expect(rules).toEqual(file.groups);
    expect(JSON.stringify(rules)).toContain('llmhub_rollout_rollbacks_total');
  });

  test('self-hosted mTLS values: client certificate files, server name, versitygw tenant keys, platform S3 Secret, KEK', async () => {
    const { docs } = await render('self-hosted-mtls');
    const config = find(docs, 'ConfigMap', 'llmhub').data;
    expect(config).toMatchObject({
      TEMPORAL_TLS: 'true',
      TEMPORAL_TLS_SERVER_NAME: 'temporal-frontend.temporal.svc',
      LLMHUB_STORAGE_ADMIN: 'versitygw',
      LLMHUB_TENANT_EGRESS_CIDRS: '10.96.0.0/16',
      QDRANT_URL: 'http://qdrant.qdrant.svc:6333',
      S3_ENDPOINT: 'http://versitygw.storage.svc:7070',
      LLMHUB_PROVIDER_EGRESS_ALLOW: 'vllm.inference.svc',
      LLMHUB_WEBHOOK_EGRESS_ALLOW: '10.96.0.0/16',
    });
    // The key-encryption keys: a read-only Secret volume in the api and gateway, never in a worker.
    for (const name of ['llmhub-api', 'llmhub-gateway']) {
      const d = find(docs, 'Deployment', name);
      expect(envOf(d, 'LLMHUB_KEK_FILE').value).toBe('/etc/llmhub/kek/keys.json');
      expect(d.spec.template.spec.volumes).toContainEqual({
        name: 'kek',
        secret: expect.objectContaining({ secretName: 'llmhub-kek' }),
      });
      expect(container(d).volumeMounts).toContainEqual({ name: 'kek', mountPath: '/etc/llmhub/kek', readOnly: true });
    }
    const worker = find(docs, 'Deployment', 'llmhub-worker-platform');
    expect(envOf(worker, 'LLMHUB_KEK_FILE')).toBeUndefined();
    expect(JSON.stringify(worker.spec.template.spec.volumes)).not.toContain('llmhub-kek');
    for (const name of ['llmhub-api', 'llmhub-gateway', 'llmhub-worker-platform']) {
      const d = find(docs, 'Deployment', name);
      expect(envOf(d, 'TEMPORAL_TLS_CERT_FILE').value).toBe('/etc/llmhub/temporal-tls/tls.crt');
      expect(envOf(d, 'TEMPORAL_TLS_KEY_FILE').value).toBe('/etc/llmhub/temporal-tls/tls.key');
      expect(envOf(d, 'TEMPORAL_TLS_CA_FILE').value).toBe('/etc/llmhub/temporal-tls/ca.crt');
      expect(d.spec.template.spec.volumes).toContainEqual(
        expect.objectContaining({
          name: 'temporal-tls',
          secret: expect.objectContaining({ secretName: 'llmhub-temporal-client-tls' }),
        }),
      );
      expect(envOf(d, 'S3_SECRET_ACCESS_KEY').valueFrom.secretKeyRef).toEqual({
        name: 'llmhub-s3-root',
        key: 'secret-access-key',
      });
    }
    expect(docs.some((d) => d.kind === 'Ingress' || d.kind === 'HorizontalPodAutoscaler')).toBe(false);
    expect(find(docs, 'Deployment', 'llmhub-gateway').spec.replicas).toBe(3);
  });

  test('Gateway API values: an HTTPRoute sends inference and GET /v1/models to the gateway, the rest to the api', async () => {
    const { docs } = await render('gateway-api');
    expect(docs.some((d) => d.kind === 'Ingress')).toBe(false);
    const route = find(docs, 'HTTPRoute', 'llmhub');
    expect(route.spec.hostnames).toEqual(['llm.example.com']);
    const [toGateway, toApi] = route.spec.rules;
    expect(toGateway.backendRefs).toEqual([{ name: 'llmhub-gateway', port: 80 }]);
    expect(toGateway.matches).toEqual([
      { path: { type: 'PathPrefix', value: '/v1/chat/completions' } },
      { path: { type: 'PathPrefix', value: '/v1/completions' } },
      { path: { type: 'PathPrefix', value: '/v1/embeddings' } },
      { path: { type: 'Exact', value: '/v1/models' }, method: 'GET' },
    ]);
    expect(toApi).toEqual({
      matches: [{ path: { type: 'PathPrefix', value: '/' } }],
      backendRefs: [{ name: 'llmhub-api', port: 80 }],
    });
  });

  describe("the worker's RBAC, applied for real", () => {
    const worker = () => `system:serviceaccount:${ns}:llmhub-worker`;
    const tenantRole = () => `${ns}-llmhub-tenant`;
    let tenantNs: string;
    let workerKc: KubeConfig;
    /** `kubectl auth can-i` as the worker's ServiceAccount (a SubjectAccessReview by the API server's RBAC authorizer). */
    const canI = async (verb: string, resource: string, namespace?: string): Promise<boolean> => {
      const r = await exec(kubectl, [
        ...kc(),
        'auth',
        'can-i',
        verb,
        resource,
        `--as=${worker()}`,
        ...(namespace ? ['-n', namespace] : []),
      ]);
      if (r.stdout.trim() !== 'yes' && r.stdout.trim() !== 'no') throw new Error(`can-i: ${r.stderr}`);
      return r.stdout.trim() === 'yes';
    };
    /** A request as the worker, checked but not persisted (dry run): RBAC and admission answer as for a real one. */
    const asWorker = (args: string[]) => exec(kubectl, [...kc(), `--as=${worker()}`, ...args, '--dry-run=server']);

    beforeAll(async () => {
      const { docs } = await render('default');
      const rbacKinds = [
        'ServiceAccount',
        'ClusterRole',
        'ClusterRoleBinding',
        'ValidatingAdmissionPolicy',
        'ValidatingAdmissionPolicyBinding',
      ];
      const rbac = docs.filter((d) => rbacKinds.includes(d.kind!));
      clusterScoped.push(...rbac.filter((d) => d.kind !== 'ServiceAccount'));
      await ok(
        kubectl,
        [...kc(), 'apply', '--namespace', ns, '-f', '-'],
        rbac.map((d) => JSON.stringify(d)).join('\n---\n'),
      );
      // The worker's real identity: a token for its ServiceAccount, as the kubelet would mount it.
      const token = (await ok(kubectl, [...kc(), 'create', 'token', 'llmhub-worker', '-n', ns])).trim();
      const admin = k.kc.getCurrentCluster()!;
      workerKc = new KubeConfig();
      workerKc.loadFromOptions({
        clusters: [admin],
        users: [{ name: 'worker', token }],
        contexts: [{ name: 'worker', cluster: admin.name, user: 'worker' }],
        currentContext: 'worker',
      });
      tenantNs = uniqueName('llmhub-tenant');
      tenantNamespaces.push(tenantNs);
    }, 120_000);

    test('grants exactly the listed rules: namespaces and role binding cluster-wide, tenant objects only by RoleBinding', async () => {
      const { docs } = await render('default');
      const rules = (name: string) => find(docs, 'ClusterRole', name).rules;
      expect(rules(`${ns}-llmhub-worker`)).toEqual([
        { apiGroups: [''], resources: ['namespaces'], verbs: ['get', 'create', 'patch', 'delete'] },
        { apiGroups: ['rbac.authorization.k8s.io'], resources: ['rolebindings'], verbs: ['create', 'patch'] },
        {
          apiGroups: ['rbac.authorization.k8s.io'],
          resources: ['clusterroles'],
          verbs: ['bind'],
          resourceNames: [tenantRole()],
        },
      ]);
      expect(rules(tenantRole())).toEqual([
        { apiGroups: [''], resources: ['resourcequotas'], verbs: ['create', 'patch'] },
        { apiGroups: ['networking.k8s.io'], resources: ['networkpolicies'], verbs: ['create', 'patch'] },
        {
          apiGroups: ['apps'],
          resources: ['deployments'],
          verbs: ['get', 'list', 'create', 'patch', 'delete', 'deletecollection'],
        },
        { apiGroups: ['apps'], resources: ['deployments/scale'], verbs: ['patch'] },
        { apiGroups: [''], resources: ['services'], verbs: ['get', 'create', 'patch', 'delete', 'deletecollection'] },
        {
          apiGroups: ['batch'],
          resources: ['jobs'],
          verbs: ['get', 'list', 'create', 'patch', 'delete', 'deletecollection'],
        },
        { apiGroups: [''], resources: ['secrets'], verbs: ['get', 'create', 'patch', 'deletecollection'] },
        { apiGroups: [''], resources: ['pods'], verbs: ['list'] },
      ]);
      const bindings = docs.filter((d) => d.kind === 'ClusterRoleBinding' || d.kind === 'RoleBinding');
      expect(bindings.map((b) => b.roleRef.name)).toEqual([`${ns}-llmhub-worker`]);
    });

    test('as its ServiceAccount, the worker provisions a tenant namespace and binds its tenant role there', async () => {
      const config = loadConfig({
        DATABASE_URL: 'postgres://unused',
        LLMHUB_PLATFORM_NAMESPACE: ns,
        LLMHUB_TENANT_ROLE: tenantRole(),
        LLMHUB_WORKER_SERVICE_ACCOUNT: `${ns}:llmhub-worker`,
      });
      const objects = KubernetesObjectApi.makeApiClient(workerKc);
      const deps = {
        ...tenantNamespaceDeps(),
        namespaceOf: () => tenantNs,
        tenantNamespacePolicy: tenantNamespacePolicyOf(config),
      };
      // The API server's RBAC and admission-policy caches catch up with what was just applied within moments;
      // the activity's retries cover that window the same way.
      await waitFor(
        'the worker provisions its tenant namespace',
        async () => {
          await ensureTenantNamespace(objects, 'acme', deps);
          return true;
        },
        { timeoutMs: 60_000 },
      );
      const binding = await ok(kubectl, [...kc(), 'get', 'rolebinding', 'llmhub-worker', '-n', tenantNs, '-o', 'json']);
      expect(JSON.parse(binding)).toMatchObject({
        roleRef: { kind: 'ClusterRole', name: tenantRole() },
        subjects: [{ kind: 'ServiceAccount', name: 'llmhub-worker', namespace: ns }],
      });
      // The tenant's S3 keys, written into its namespace by the worker itself.
      await tenantS3Env(objects, tenantNs, 'acme', { accessKeyId: 'AKIDTENANT', secretAccessKey: 'tenant-secret' });
      await ok(kubectl, [...kc(), 'get', 'secret', 'llmhub-s3-acme', '-n', tenantNs]);
      // What a rollout and a fine-tune apply there (no pods: 0 replicas, a suspended Job), then remove.
      const labels = { app: 'm' };
      const podTemplate = {
        metadata: { labels },
        spec: { restartPolicy: 'Never', containers: [{ name: 'm', image: IMAGE }] },
      };
      const workloads: Obj[] = [
        {
          apiVersion: 'apps/v1',
          kind: 'Deployment',
          metadata: { name: 'm', namespace: tenantNs },
          spec: {
            replicas: 0,
            selector: { matchLabels: labels },
            template: { ...podTemplate, spec: { containers: podTemplate.spec.containers } },
          },
        },
        {
          apiVersion: 'v1',
          kind: 'Service',
          metadata: { name: 'm', namespace: tenantNs },
          spec: { selector: labels, ports: [{ port: 8000 }] },
        },
        {
          apiVersion: 'batch/v1',
          kind: 'Job',
          metadata: { name: 'ft-1', namespace: tenantNs },
          spec: { suspend: true, template: podTemplate },
        },
      ];
      for (const w of workloads) await serverSideApply(objects, w);
      for (const w of workloads) await deleteIfPresent(objects, w);

      for (const [verb, resource] of [
        ['create', 'resourcequotas'],
        ['patch', 'resourcequotas'],
        ['create', 'networkpolicies.networking.k8s.io'],
        ['patch', 'networkpolicies.networking.k8s.io'],
        ['create', 'deployments.apps'],
        ['get', 'deployments.apps'],
        ['patch', 'deployments.apps'],
        ['deletecollection', 'deployments.apps'],
        ['patch', 'services'],
        ['delete', 'services'],
        ['create', 'jobs.batch'],
        ['patch', 'jobs.batch'],
        ['list', 'jobs.batch'],
        ['get', 'secrets'],
        ['patch', 'secrets'],
        ['list', 'pods'],
      ])
        expect(`${verb} ${resource} in the tenant namespace: ${await canI(verb!, resource!, tenantNs)}`).toBe(
          `${verb} ${resource} in the tenant namespace: true`,
        );
      for (const verb of ['get', 'create', 'patch', 'delete'])
        expect(`${verb} namespaces: ${await canI(verb, 'namespaces')}`).toBe(`${verb} namespaces: true`);
    });

    test('denies Secrets outside tenant namespaces, RBAC objects, nodes and everything it does not use', async () => {
      const denied: [string, string, string?][] = [
        ['get', 'secrets', 'kube-system'],
        ['list', 'secrets', 'kube-system'],
        ['get', 'secrets', 'default'],
        // The release namespace holds the platform's own S3 and database Secrets: mounted into the pods, never read.
        ['get', 'secrets', ns],
        ['list', 'secrets', tenantNs],
        ['create', 'clusterroles'],
        ['create', 'clusterrolebindings'],
        ['escalate', 'clusterroles'],
        ['create', 'roles', tenantNs],
        ['get', 'nodes'],
        ['list', 'nodes'],
        ['patch', 'nodes'],
        ['list', 'namespaces'],
        ['create', 'pods', tenantNs],
        ['create', 'pods/exec', tenantNs],
        ['get', 'pods/log', tenantNs],
        ['patch', 'deployments.apps', 'kube-system'],
        ['patch', 'deployments.apps', ns],
        ['patch', 'jobs.batch', 'default'],
        ['get', 'configmaps', ns],
        ['create', 'serviceaccounts/token', ns],
        ['patch', 'validatingadmissionpolicies.admissionregistration.k8s.io'],
        ['create', 'customresourcedefinitions.apiextensions.k8s.io'],
      ];
      for (const [verb, resource, namespace] of denied)
        expect(`${verb} ${resource} in ${namespace ?? '(cluster)'}: ${await canI(verb, resource, namespace)}`).toBe(
          `${verb} ${resource} in ${namespace ?? '(cluster)'}: false`,
        );
    });

    test('its cluster-wide namespace and binding rights stop at tenant namespaces (the admission policy)', async () => {
      const refusedBy = (r: Run, what: RegExp) => {
        expect(r.code).not.toBe(0);
        expect(r.stderr).toMatch(what);
      };
      const policy = /ValidatingAdmissionPolicy/;
      // The policy's own cache: wait until it refuses, then every other case must be refused too.
      await waitFor(
        'the admission policy is in force',
        async () => {
          const r = await asWorker(['create', 'namespace', uniqueName('not-a-tenant')]);
          return r.code !== 0 && policy.test(r.stderr);
        },
        { timeoutMs: 60_000 },
      );
      refusedBy(await asWorker(['label', 'namespace', 'kube-system', 'llmhub.dev/tenant-namespace=true']), policy);
      refusedBy(await asWorker(['label', 'namespace', ns, 'pod-security.kubernetes.io/enforce=privileged']), policy);
      // (kube-system and default are refused before the policy: the API server never deletes them.)
      refusedBy(await asWorker(['delete', 'namespace', ns]), policy);
      const bind = (namespace: string, role: string, sa: string) =>
        asWorker(['create', 'rolebinding', 'x', '-n', namespace, `--clusterrole=${role}`, `--serviceaccount=${sa}`]);
      // Its tenant role into kube-system (would give it kube-system's Secrets), or to a tenant's own pods.
      refusedBy(await bind('kube-system', tenantRole(), `${ns}:llmhub-worker`), policy);
      refusedBy(await bind(tenantNs, tenantRole(), `${tenantNs}:default`), policy);
      // A role it may not bind: RBAC's escalation check.
      refusedBy(
        await bind(tenantNs, 'cluster-admin', `${ns}:llmhub-worker`),
        /attempting to grant RBAC permissions not currently held/,
      );
      // What the worker does do passes the same checks.
      expect((await bind(tenantNs, tenantRole(), `${ns}:llmhub-worker`)).code).toBe(0);
      expect((await asWorker(['label', 'namespace', tenantNs, 'llmhub.dev/checked=true'])).code).toBe(0);
      const removed = await exec(kubectl, [
        ...kc(),
        `--as=${worker()}`,
        'delete',
        'namespace',
        tenantNs,
        '--wait=false',
      ]);
      expect(removed.stderr).toBe('');
      expect(removed.code).toBe(0);
    });
  });
});
