/**
 * Gateway benchmark (`npm run bench:gateway`), not a test: on this machine, against the reference model server,
 * compares (a) direct calls, (b) a minimal raw node:http proxy and (c) the gateway (a real API process with auth,
 * routing, limits and metering) for requests/s, latency added at a fixed 2,000 requests/s, time to first token
 * of 1,000 concurrent streams, and the gateway's RSS while they run. Prints the figures and the ratios.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Pool as HttpPool } from 'undici';
import { migrate } from '../../../common/store/migrate';
import { createPool } from '../../../common/store/pool';
import { LimitStore } from '../../../common/store/limits';
import { TenantStore } from '../../../common/store/tenants';
import { freePort, startProcess, waitFor, type ManagedProcess } from '../../../deploy/dev/process';
import { randomPorts, startLocalStack } from '../../../deploy/dev/stack';
import { serveModel } from '../../support/gateway';
import { runScript } from '../../support/script';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const DURATION_MS = Number(process.env.BENCH_SECONDS ?? 5) * 1000;
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 64);
const RATE = 2_000;
const STREAMS = 1_000;
const MODEL = 'bench-model';

const tsx = (script: string, args: string[] = []) => ({ command: process.execPath, args: ['--import', 'tsx', path.join(ROOT, script), ...args] });

interface Target {
  name: string;
  url: string;
  /** The process that serves the target's requests. */
  pid: number;
  headers: Record<string, string>;
}

const percentile = (sorted: number[], q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN;

async function call(pool: HttpPool, t: Target, body: string): Promise<number> {
  const started = performance.now();
  const res = await pool.request({ path: '/v1/chat/completions', method: 'POST', headers: t.headers, body });
  await res.body.arrayBuffer();
  if (res.statusCode !== 200) throw new Error(`${t.name} answered ${res.statusCode}`);
  return performance.now() - started;
}

/** CPU seconds (user + system) a process has used; /proc counts in clock ticks, 100 a second on Linux. */
const cpuSecondsOf = async (pid: number) => {
  const fields = (await readFile(`/proc/${pid}/stat`, 'utf8')).replace(/^.*\) /s, '').split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
};

/**
 * Closed loop: CONCURRENCY callers back to back for DURATION_MS. Also the CPU the serving process spent per request,
 * which, unlike requests/s, hardly depends on what else the (shared) machine is running.
 */
async function throughput(t: Target, body: string): Promise<{ rps: number; cpuUsPerRequest: number }> {
  const pool = new HttpPool(t.url, { connections: CONCURRENCY });
  const warmEnd = performance.now() + 1_000;
  await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
    while (performance.now() < warmEnd) await call(pool, t, body);
  }));
  let done = 0;
  const cpuBefore = await cpuSecondsOf(t.pid);
  const end = performance.now() + DURATION_MS;
  await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
    while (performance.now() < end) {
      await call(pool, t, body);
      done++;
    }
  }));
  const cpu = (await cpuSecondsOf(t.pid)) - cpuBefore;
  await pool.close();
  return { rps: done / (DURATION_MS / 1000), cpuUsPerRequest: (cpu * 1e6) / done };
}

/** Open loop at RATE requests/s: latency is measured from each request's scheduled start. */
async function latencyAtRate(t: Target, body: string): Promise<{ p50: number; p99: number }> {
  const pool = new HttpPool(t.url, { connections: 256 });
  const latencies: number[] = [];
  const total = Math.floor((RATE * DURATION_MS) / 1000);
  const start = performance.now();
  const inflight: Promise<void>[] = [];
  for (let i = 0; i < total; i++) {
    const due = start + (i * 1000) / RATE;
    const wait = due - performance.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    inflight.push(call(pool, t, body).then(() => void latencies.push(performance.now() - due)));
  }
  await Promise.all(inflight);
  await pool.close();
  latencies.sort((a, b) => a - b);
  return { p50: percentile(latencies, 0.5), p99: percentile(latencies, 0.99) };
}

const rssOf = async (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(await readFile(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) / 1024;

/** STREAMS concurrent streams; TTFT of each, and the gateway's RSS sampled while they run. */
async function streams(t: Target, pid?: number): Promise<{ ttftP50: number; ttftP99: number; rss: number[] }> {
  const pool = new HttpPool(t.url, { connections: STREAMS });
  const body = JSON.stringify({ model: MODEL, stream: true, messages: [{ role: 'user', content: 'stream please' }] });
  const rss: number[] = [];
  let running = true;
  const sampler = (async () => {
    while (running && pid) {
      rss.push(await rssOf(pid));
      await new Promise((r) => setTimeout(r, 250));
    }
  })();
  const ttfts = await Promise.all(
    Array.from({ length: STREAMS }, async () => {
      const started = performance.now();
      const res = await pool.request({ path: '/v1/chat/completions', method: 'POST', headers: t.headers, body });
      let ttft = NaN;
      for await (const _chunk of res.body) if (Number.isNaN(ttft)) ttft = performance.now() - started;
      if (res.statusCode !== 200) throw new Error(`${t.name} stream answered ${res.statusCode}`);
      return ttft;
    }),
  );
  running = false;
  await sampler;
  await pool.close();
  ttfts.sort((a, b) => a - b);
  return { ttftP50: percentile(ttfts, 0.5), ttftP99: percentile(ttfts, 0.99), rss };
}

async function main(): Promise<void> {
  const dataDir = path.join(ROOT, '.data', 'bench', `run-${process.pid}`);
  const procs: ManagedProcess[] = [];
  const stack = await startLocalStack({ dataDir, ports: await randomPorts() });
  try {
    const db = createPool(stack.env.DATABASE_URL!, 4);
    await migrate(db);
    const [upPort, rawPort, apiPort] = [await freePort(), await freePort(), await freePort()];
    const model = await startProcess({ name: 'reference-model', ...tsx('deploy/dev/model-server/main.ts', ['--port', String(upPort), '--name', 'bench']), dataDir });
    procs.push(model);
    const raw = await startProcess({ name: 'raw-proxy', ...tsx('test/bench/gateway/raw-proxy.ts'), dataDir, env: { PORT: String(rawPort), UPSTREAM_URL: `http://127.0.0.1:${upPort}` } });
    procs.push(raw);
    const api = await startProcess({ name: 'gateway', ...tsx('api/server.ts'), dataDir, env: { ...stack.env, API_PORT: String(apiPort), LOG_LEVEL: 'warn' } });
    procs.push(api);
    const tenants = new TenantStore(db);
    await tenants.createTenant('bench', 'bench');
    const { key } = await tenants.createApiKey('bench', 'bench', 'developer');
    await serveModel(db, 'bench', MODEL, { '1': `http://127.0.0.1:${upPort}/v1` }, { stable: '1' });
    // Generous limits, so the leasing path runs without refusing anything.
    await new LimitStore(db).setLimit({ tenantId: 'bench', subject: '', windowSeconds: 60, maxRequests: 10_000_000, maxTokens: 10_000_000_000 });
    for (const port of [upPort, rawPort, apiPort]) await waitFor(`port ${port}`, async () => (await fetch(`http://127.0.0.1:${port}/v1/models`).catch(() => undefined)) !== undefined);

    const json = { 'content-type': 'application/json' };
    const targets: Target[] = [
      { name: 'direct', url: `http://127.0.0.1:${upPort}`, pid: model.pid, headers: json },
      { name: 'raw proxy', url: `http://127.0.0.1:${rawPort}`, pid: raw.pid, headers: json },
      { name: 'gateway', url: `http://127.0.0.1:${apiPort}`, pid: api.pid, headers: { ...json, authorization: `Bearer ${key}` } },
    ];
    const body = JSON.stringify({ model: MODEL, max_tokens: 8, messages: [{ role: 'user', content: 'hello benchmark' }] });
    await waitFor('the gateway to route the model', async () => (await call(new HttpPool(targets[2]!.url), targets[2]!, body).then(() => true, () => false)));

    const rps: Record<string, number> = {};
    const cpu: Record<string, number> = {};
    const lat: Record<string, { p50: number; p99: number }> = {};
    for (const t of targets) {
      ({ rps: rps[t.name], cpuUsPerRequest: cpu[t.name] } = await throughput(t, body));
      lat[t.name] = await latencyAtRate(t, body);
      console.log(
        `${t.name.padEnd(10)} ${rps[t.name]!.toFixed(0).padStart(7)} req/s  ${cpu[t.name]!.toFixed(0).padStart(4)} µs CPU/request   at ${RATE}/s: p50 ${lat[t.name]!.p50.toFixed(2)} ms  p99 ${lat[t.name]!.p99.toFixed(2)} ms`,
      );
    }
    const d = lat.direct!;
    console.log(`\nthroughput ratio  gateway/raw proxy ${(rps.gateway! / rps['raw proxy']!).toFixed(2)}  (target >= 0.85);  raw proxy/direct ${(rps['raw proxy']! / rps.direct!).toFixed(2)}`);
    // Where the proxy's own CPU is the bottleneck, its requests/s is the inverse of its CPU per request.
    console.log(`CPU per request  raw proxy/gateway ${(cpu['raw proxy']! / cpu.gateway!).toFixed(2)}  (the throughput ratio on an otherwise idle core)`);
    console.log(`added latency at ${RATE}/s  gateway p50 ${(lat.gateway!.p50 - d.p50).toFixed(2)} ms (target < 1)  p99 ${(lat.gateway!.p99 - d.p99).toFixed(2)} ms (target < 5);  raw proxy p50 ${(lat['raw proxy']!.p50 - d.p50).toFixed(2)} ms  p99 ${(lat['raw proxy']!.p99 - d.p99).toFixed(2)} ms`);

    await fetch(`http://127.0.0.1:${upPort}/admin/faults`, { method: 'POST', body: JSON.stringify({ ttftMs: 200, tokenIntervalMs: 50, replyTokens: 60 }) });
    const direct = await streams(targets[0]!);
    const rssBefore = await rssOf(api.pid);
    const viaGateway = await streams(targets[2]!, api.pid);
    const rssAfter = await rssOf(api.pid);
    console.log(`\n${STREAMS} concurrent streams (TTFT 200 ms, 60 tokens 50 ms apart at the upstream)`);
    console.log(`TTFT direct p50 ${direct.ttftP50.toFixed(1)} ms p99 ${direct.ttftP99.toFixed(1)} ms;  gateway p50 ${viaGateway.ttftP50.toFixed(1)} ms p99 ${viaGateway.ttftP99.toFixed(1)} ms;  overhead p50 ${(viaGateway.ttftP50 - direct.ttftP50).toFixed(1)} ms`);
    const during = viaGateway.rss;
    const half = Math.floor(during.length / 2);
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
    console.log(
      `gateway RSS MiB: before ${rssBefore.toFixed(0)}, during min ${Math.min(...during).toFixed(0)} max ${Math.max(...during).toFixed(0)} (first half mean ${mean(during.slice(0, half)).toFixed(0)}, second half ${mean(during.slice(half)).toFixed(0)}), after ${rssAfter.toFixed(0)}`,
    );
    await db.end();
  } finally {
    for (const p of procs.reverse()) await p.stop();
    await stack.stop();
  }
}

runScript(main);
