import { execFile } from 'node:child_process';
import { readdir, readFile, writeFile, mkdir } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { ingestionContract, type IngestionInput } from '../../contracts/ingestion';
import { startReferenceModelServer, type ReferenceModelServer } from '../../deploy/dev/model-server/server';
import { freePort, startProcess, type ManagedProcess } from '../../deploy/dev/process';
import { serveModel, untilRouted } from '../support/gateway';
import {
  bearer,
  eventually,
  startTestPlatform,
  startWorkerProcess,
  uniqueId,
  type TestPlatform,
  type TestTenant,
} from '../support/platform';

/**
 * The dashboards (deploy/grafana) and alert rules (the chart's files/prometheus) against a real Prometheus that scrapes the
 * running api (which serves the gateway's metrics in this process) and a worker process: every PromQL expression
 * parses and evaluates, and every metric it names is exported once the platform has done some work.
 */
const run = promisify(execFile);
const ROOT = path.resolve(__dirname, '..', '..');
const RULES = path.join(ROOT, 'deploy', 'helm', 'llmhub', 'files', 'prometheus', 'alerts.yaml');
const DASHBOARDS = path.join(ROOT, 'deploy', 'grafana');
const BUILD = path.join(ROOT, 'deploy', 'dev', 'prometheus', 'build.sh');

let p: TestPlatform;
let tenant: TestTenant;
let worker: ManagedProcess;
let prometheus: ManagedProcess;
let bin: string;
let promUrl: string;
let exported: Set<string>;
const models: ReferenceModelServer[] = [];

const api = (base: string, method: string, url: string, key: string, body?: object) =>
  fetch(`${base}${url}`, {
    method,
    headers: { ...bearer(key), ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body && JSON.stringify(body),
  });

interface PromAnswer<T> {
  status: 'success' | 'error';
  data: T;
  error?: string;
}

async function prom<T>(endpoint: string, params: Record<string, string> = {}): Promise<PromAnswer<T>> {
  const res = await fetch(`${promUrl}${endpoint}?${new URLSearchParams(params)}`);
  return (await res.json()) as PromAnswer<T>;
}

/** Grafana's variables as the test evaluates them: every value of a template variable, a fixed rate window. */
const substitute = (expr: string): string =>
  expr
    .replaceAll('$__rate_interval', '1m')
    .replaceAll('$__interval', '1m')
    .replaceAll('$__range', '1h')
    .replace(/\$\{\w+\}|\$\w+/g, '.*');

/** The metric names of every selector in Prometheus's own AST of the expression (/api/v1/parse_query). */
function selectorNames(node: unknown, out = new Set<string>()): Set<string> {
  if (Array.isArray(node)) for (const n of node) selectorNames(n, out);
  else if (node && typeof node === 'object') {
    const n = node as { type?: string; name?: string; matchers?: { name: string; type: string; value: string }[] };
    if (n.type === 'vectorSelector' || n.type === 'matrixSelector') {
      const byMatcher = n.matchers?.find((m) => m.name === '__name__');
      // A selector must name its metric: a regex over names would hide a renamed metric.
      out.add(n.name || (byMatcher?.type === '=' ? byMatcher.value : `<unnamed selector ${JSON.stringify(n)}>`));
    }
    for (const v of Object.values(n)) selectorNames(v, out);
  }
  return out;
}

/** What is wrong with one expression: a parse or evaluation error, or metric names no target exports. */
async function problemsOf(expr: string): Promise<string[]> {
  const query = substitute(expr);
  const parsed = await prom<unknown>('/api/v1/parse_query', { query });
  if (parsed.status !== 'success') return [`does not parse: ${parsed.error}`];
  const evaluated = await prom<unknown>('/api/v1/query', { query });
  if (evaluated.status !== 'success') return [`does not evaluate: ${evaluated.error}`];
  return [...selectorNames(parsed.data)].filter((n) => !exported.has(n)).map((n) => `${n} is not exported`);
}

interface Panel {
  title?: string;
  targets?: { expr?: string }[];
  panels?: Panel[];
}

/** Every query of every dashboard: panel targets (rows' panels too) and the query variables' label_values(). */
async function dashboardQueries(): Promise<{ where: string; expr: string }[]> {
  const out: { where: string; expr: string }[] = [];
  for (const file of (await readdir(DASHBOARDS)).filter((f) => f.endsWith('.json'))) {
    const dash = JSON.parse(await readFile(path.join(DASHBOARDS, file), 'utf8')) as {
      panels: Panel[];
      templating: { list: { name: string; type: string; query: string | { query: string } }[] };
    };
    const walk = (panels: Panel[]) => {
      for (const panel of panels) {
        for (const t of panel.targets ?? []) if (t.expr) out.push({ where: `${file}: ${panel.title}`, expr: t.expr });
        walk(panel.panels ?? []);
      }
    };
    walk(dash.panels);
    for (const v of dash.templating.list.filter((v) => v.type === 'query')) {
      const q = typeof v.query === 'string' ? v.query : v.query.query;
      const selector = /^label_values\((.+),\s*\w+\)$/.exec(q)?.[1];
      out.push({ where: `${file}: variable ${v.name}`, expr: selector ?? q });
    }
  }
  return out;
}

beforeAll(async () => {
  // Cached after the first build (scripts/setup.sh builds it); a cold build takes minutes.
  await run('bash', [BUILD], { timeout: 45 * 60_000 });
  bin = (await run('bash', [BUILD, '--print-bin-dir'])).stdout.trim();

  p = await startTestPlatform({ worker: false });
  const metricsPort = await freePort();
  worker = await startWorkerProcess(p, { WORKER_METRICS_PORT: String(metricsPort) });
  await p.app.listen({ host: '127.0.0.1', port: 0 });
  const base = `http://127.0.0.1:${(p.app.server.address() as AddressInfo).port}`;
  tenant = await p.createTenant('dash');

  // Gateway traffic: answered, streamed (time to first token), failed by the model server, refused by a limit.
  models.push(await startReferenceModelServer({ name: 'dash-ok' }));
  models.push(await startReferenceModelServer({ name: 'dash-broken', faults: { errorRate: 1 } }));
  const route = { stable: 'v1', canary: null, canaryWeight: 0 };
  // Priced before it is routed (prices and routes reach the gateway in one snapshot), so its traffic has a cost.
  const price = { model: 'dash-ok', currency: 'USD', inputPerMillion: 1, outputPerMillion: 2 };
  expect((await api(base, 'PUT', '/v1/platform/prices', p.operatorKey, price)).status).toBe(200);
  await serveModel(p.db, tenant.id, 'dash-ok', { v1: models[0]!.url }, route);
  await serveModel(p.db, tenant.id, 'dash-broken', { v1: models[1]!.url }, route);
  await untilRouted(p.app, tenant.keys.developer, 'dash-ok');
  await untilRouted(p.app, tenant.keys.developer, 'dash-broken');
  const chat = (key: string, model: string, stream = false) =>
    api(base, 'POST', '/v1/chat/completions', key, { model, stream, messages: [{ role: 'user', content: 'hello' }] });
  expect((await chat(tenant.keys.developer, 'dash-ok')).status).toBe(200);
  const streamed = await chat(tenant.keys.developer, 'dash-ok', true);
  expect(streamed.status).toBe(200);
  expect(await streamed.text()).toContain('[DONE]');
  expect((await chat(tenant.keys.developer, 'dash-broken')).status).toBe(502);
  const limited = (await (
    await api(base, 'POST', '/v1/api-keys', tenant.keys.admin, { name: 'limited', role: 'developer' })
  ).json()) as { id: string; key: string };
  const limit = { subject: `key:${limited.id}`, windowSeconds: 3600, maxRequests: 1 };
  expect((await api(base, 'PUT', '/v1/limits', tenant.keys.admin, limit)).status).toBe(200);
  await eventually('a request refused by the limit', async () => (await chat(limited.key, 'dash-ok')).status === 429);

  // A GPU quota, so the tenant is on the GPU gauges.
  const quota = await api(base, 'PUT', `/v1/platform/tenants/${tenant.id}/gpu-quota`, p.operatorKey, { gpus: 3 });
  expect(quota.status).toBe(200);

  // Operations: an ingestion of an uploaded file, and one whose source is outside the tenant's scope, which fails
  // (started directly: the API refuses such a source before any workflow).
  const upload = await fetch(`${base}/v1/knowledge/dash/files?name=notes.md`, {
    method: 'POST',
    headers: { ...bearer(tenant.keys.developer), 'content-type': 'application/octet-stream' },
    body: '# Dashboards\n\nEvery panel query is checked against a real Prometheus.\n',
  });
  expect(upload.status).toBe(201);
  const ingestion = await api(base, 'POST', '/v1/knowledge/dash/ingestions', tenant.keys.developer, {
    source: { type: 'uploads' },
  });
  expect(ingestion.status).toBe(202);
  const { workflowId } = (await ingestion.json()) as { workflowId: string };
  expect(await p.temporal.workflow.getHandle(workflowId).result()).toMatchObject({ done: 1 });
  const outOfScope: IngestionInput = {
    tenantId: tenant.id,
    namespace: 'dash-fails',
    ingestionId: uniqueId('ing'),
    source: { type: 's3', bucket: `${tenant.bucket}-not-theirs`, prefix: '' },
    parser: 'builtin',
    chunking: { strategy: 'heading', size: 1000, overlap: 150 },
    embedder: 'default',
    batchSize: 25,
    parallelism: 1,
  };
  const failing = await p.temporal.workflow.start(ingestionContract.workflowType, {
    taskQueue: p.taskQueue,
    workflowId: uniqueId('dash-fails'),
    args: [outOfScope],
  });
  await expect(failing.result()).rejects.toThrow();
  const workDone = Date.now();

  const dir = path.join(process.env.LLMHUB_TEST_DATA!, uniqueId('prometheus'));
  await mkdir(path.join(dir, 'data'), { recursive: true });
  const keyFile = path.join(dir, 'operator-key');
  await writeFile(keyFile, p.operatorKey, { mode: 0o600 });
  const config = path.join(dir, 'prometheus.yml');
  // JSON is YAML: the scrape config the README shows, with 1 s intervals so the test waits little.
  await writeFile(
    config,
    JSON.stringify({
      global: { scrape_interval: '1s', evaluation_interval: '1s' },
      rule_files: [RULES],
      scrape_configs: [
        {
          job_name: 'llmhub-api',
          authorization: { credentials_file: keyFile },
          static_configs: [{ targets: [new URL(base).host] }],
        },
        { job_name: 'llmhub-worker', static_configs: [{ targets: [`127.0.0.1:${metricsPort}`] }] },
      ],
    }),
  );
  const port = await freePort();
  promUrl = `http://127.0.0.1:${port}`;
  prometheus = await startProcess({
    name: uniqueId('prometheus'),
    command: path.join(bin, 'prometheus'),
    args: [
      `--config.file=${config}`,
      `--storage.tsdb.path=${path.join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
    ],
    dataDir: dir,
    inheritEnv: false,
  });
  await eventually('both targets scraped, up, after the work was done', async () => {
    const { data } = await prom<{
      activeTargets: { health: string; lastScrape: string; scrapePool: string }[];
    }>('/api/v1/targets', { state: 'active' });
    return (
      data.activeTargets.length === 2 &&
      data.activeTargets.every((t) => t.health === 'up' && Date.parse(t.lastScrape) > workDone)
    );
  });
  await eventually('every rule evaluated', async () => {
    const { data } = await prom<{ groups: { rules: { lastEvaluation: string }[] }[] }>('/api/v1/rules');
    return data.groups.flatMap((g) => g.rules).every((r) => Date.parse(r.lastEvaluation) > workDone);
  });
  exported = new Set((await prom<string[]>('/api/v1/label/__name__/values')).data);
}, 60 * 60_000);

afterAll(async () => {
  await prometheus?.stop();
  await worker?.stop();
  await Promise.all(models.map((m) => m.close()));
  await p?.close();
});

describe('dashboards and alert rules', () => {
  it('promtool accepts the alert rules', async () => {
    const { stdout } = await run(path.join(bin, 'promtool'), ['check', 'rules', RULES]);
    expect(stdout).toMatch(/SUCCESS: \d+ rules found/);
  });

  it('the checker fails an unknown metric, a malformed expression and a nameless selector', async () => {
    expect(await problemsOf('rate(llmhub_gateway_requests_total[5m]')).toEqual([
      expect.stringContaining('does not parse'),
    ]);
    expect(await problemsOf('sum(rate(llmhub_no_such_metric_total[1m]))')).toEqual([
      'llmhub_no_such_metric_total is not exported',
    ]);
    expect(await problemsOf('{__name__=~"llmhub_.*"}')).toEqual([expect.stringContaining('<unnamed selector')]);
    expect(
      await problemsOf('sum by (model) (rate(llmhub_gateway_requests_total{model=~"$model"}[$__rate_interval]))'),
    ).toEqual([]);
  });

  it('every dashboard query parses, evaluates and names only exported metrics', async () => {
    const queries = await dashboardQueries();
    expect(queries.length).toBeGreaterThan(30);
    const problems: string[] = [];
    for (const q of queries) for (const problem of await problemsOf(q.expr)) problems.push(`${q.where}: ${problem}`);
    expect(problems).toEqual([]);
  });

  it('every alert rule loads, evaluates without error and names only exported metrics', async () => {
    const { data } = await prom<{
      groups: { name: string; rules: { name: string; query: string; health: string; lastError?: string }[] }[];
    }>('/api/v1/rules');
    const rules = data.groups.flatMap((g) => g.rules);
    expect(rules.map((r) => r.name)).toEqual(
      expect.arrayContaining([
        'LLMHubRolloutRolledBack',
        'LLMHubVersionErrorRate',
        'LLMHubGpuQueueWait',
        'LLMHubWorkerDown',
        'LLMHubTemporalUnreachable',
      ]),
    );
    const problems: string[] = [];
    for (const r of rules) {
      if (r.health !== 'ok') problems.push(`${r.name}: ${r.health} ${r.lastError ?? ''}`);
      for (const problem of await problemsOf(r.query)) problems.push(`${r.name}: ${problem}`);
    }
    expect(problems).toEqual([]);
  });

  it("the platform's gauges and counters carry what happened", async () => {
    const value = async (query: string): Promise<number[]> =>
      (await prom<{ result: { value: [number, string] }[] }>('/api/v1/query', { query })).data.result.map((r) =>
        Number(r.value[1]),
      );
    expect(await value('max(llmhub_temporal_reachable)')).toEqual([1]);
    expect(await value(`max(llmhub_gpu_quota_gpus{tenant="${tenant.id}"})`)).toEqual([3]);
    expect(await value(`max(llmhub_gpu_queue_waiting_claims{tenant="${tenant.id}"})`)).toEqual([0]);
    // Present at 0 before any rollout ran, so the first rollback is an increase the alert sees.
    expect(await value('llmhub_rollout_rollbacks_total')).toEqual([0, 0, 0, 0, 0]);
    expect(await value('count(llmhub_rollouts_running)')).toEqual([11]);
    expect(await value(`sum(llmhub_gateway_rate_limited_total{tenant="${tenant.id}",limit="key"})`)).toEqual([1]);
    // The chat, and the embeddings request that found the model routed.
    expect(await value(`sum(llmhub_gateway_errors_total{tenant="${tenant.id}",model="dash-broken"})`)).toEqual([2]);
    expect(
      await value(`sum(llmhub_gateway_time_to_first_token_seconds_count{tenant="${tenant.id}",model="dash-ok"})`),
    ).toEqual([1]);
    expect(await value('sum(llmhub_ingestion_documents_total{outcome="indexed"})')).toEqual([1]);
    expect((await value('sum(llmhub_ingestion_chunks_total)'))[0]).toBeGreaterThanOrEqual(1);
    expect(await value('sum(temporal_workflow_failed_total{workflow_type="ingestDocuments"})')).toEqual([1]);
    expect(
      (await value('sum(temporal_workflow_completed_total{workflow_type="ingestDocuments"})'))[0],
    ).toBeGreaterThanOrEqual(1);
  });
});
