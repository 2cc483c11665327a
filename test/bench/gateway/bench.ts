/**
 * Gateway benchmark (`npm run bench:gateway`), not a test: on this machine compares (a) direct calls, (b) a minimal
 * raw node:http proxy and (c) the gateway (the compiled gateway process, as production runs it, with auth, routing, a
 * configured limit with leasing, metering, the batched audit writer and metrics) for requests/s, CPU per request and
 * latency at a fixed 2,000 requests/s, and SSE streams/s (20 events each). Two upstreams, one row each: first a
 * fixed-reply server that answers in microseconds (test/bench/gateway/fixed-upstream.mts), so the proxies' own cost
 * is what is measured, then the reference model server (BENCH_UPSTREAMS picks, default `fixed,reference`). Then time to
 * first token and RSS with 1,000 streams open at all times against the reference server (each caller starts its next
 * stream when one ends), long enough for the gateway to collect its old generation several times. The targets are
 * measured in BENCH_ROUNDS interleaved rounds, each ratio is taken within a round, and the median and range over the
 * rounds are printed: on a shared 2-core machine one round's figures swing with whatever else runs.
 */
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Pool as HttpPool } from 'undici';
import { migrate } from '../../../common/store/migrate';
import { createPool } from '../../../common/store/pool';
import { LimitStore } from '../../../common/store/limits';
import { TenantStore } from '../../../common/store/tenants';
import { API_NODE_FLAGS } from '../../../deploy/node-flags';
import { freePort, startProcess, waitFor, type ManagedProcess } from '../../../deploy/dev/process';
import { randomPorts, startLocalStack } from '../../../deploy/dev/stack';
import { serveModel } from '../../support/gateway';
import { runScript } from '../../support/script';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const DURATION_MS = Number(process.env.BENCH_SECONDS ?? 5) * 1000;
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 64);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
/** How long 1,000 streams are kept open through each proxy; long enough for the gateway to go through full GCs. */
const STREAM_SECONDS = Number(process.env.BENCH_STREAM_SECONDS ?? 90);
/** How long they run direct, for the time-to-first-token baseline. */
const DIRECT_STREAM_SECONDS = Number(process.env.BENCH_DIRECT_STREAM_SECONDS ?? 20);
/** RSS is reported as its highest value in spans of this many seconds. */
const SPAN_SECONDS = 15;
const RATE = 2_000;
const IDLE_SECONDS = Number(process.env.BENCH_IDLE_SECONDS ?? 90);
const STREAMS = 1_000;
/** Each stream: first token after 200 ms, then 160 tokens 50 ms apart (8 s), long enough for a steady state to watch. */
const STREAM_FAULTS = { ttftMs: 200, tokenIntervalMs: 50, replyTokens: 160 };
const MODEL = 'bench-model';
/** The model the gateway routes to the fixed-reply upstream. */
const FIXED_MODEL = 'bench-fixed';
const UPSTREAMS = (process.env.BENCH_UPSTREAMS ?? 'fixed,reference').split(',') as Array<'fixed' | 'reference'>;
/**
 * The `dist/` of another build of the gateway (e.g. the commit before a change), measured as a fourth target with the
 * fixed-reply upstream in the same rounds, so a change is compared within one run on this shared machine.
 */
const BASELINE_DIST = process.env.BENCH_BASELINE_DIST;

const node = (script: string, args: string[] = [], nodeFlags: string[] = []) => ({
  command: process.execPath,
  args: [...nodeFlags, path.join(ROOT, script), ...args],
});
const tsx = (script: string, args: string[] = []) => node(script, args, ['--import', 'tsx']);
/**
 * Node flags for both proxies (raw and gateway): the API process's own heap budget, so both run as production runs
 * the gateway, plus any given to look inside them: e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof` or `--trace-gc-nvp`.
 */
const proxyFlags = [...API_NODE_FLAGS, ...(process.env.BENCH_PROXY_NODE_FLAGS ?? '').split(/\s+/).filter(Boolean)];

interface Target {
  name: string;
  url: string;
  /** The process that serves the target's requests. */
  pid: number;
  headers: Record<string, string>;
}

const percentile = (sorted: number[], q: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN;

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
  // Closed loop for a stream too: each call reads the whole stream.
  const pool = new HttpPool(t.url, { connections: CONCURRENCY });
  const warmEnd = performance.now() + 1_000;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (performance.now() < warmEnd) await call(pool, t, body);
    }),
  );
  let done = 0;
  const cpuBefore = await cpuSecondsOf(t.pid);
  const end = performance.now() + DURATION_MS;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (performance.now() < end) {
        await call(pool, t, body);
        done++;
      }
    }),
  );
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

const rssOf = async (pid: number) =>
  Number(/VmRSS:\s+(\d+)/.exec(await readFile(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) / 1024;

interface StreamRun {
  streams: number;
  ttftP50: number;
  ttftP99: number;
  /** RSS (MiB) of the proxy every 250 ms, with seconds since the run began. */
  rss: { at: number; mib: number }[];
}

/** STREAMS streams open at all times for `seconds` (each caller starts its next stream when one ends): TTFT of each, and the RSS of `pid` meanwhile. */
async function steadyStreams(t: Target, pid: number, seconds: number): Promise<StreamRun> {
  const pool = new HttpPool(t.url, { connections: STREAMS });
  const body = JSON.stringify({ model: MODEL, stream: true, messages: [{ role: 'user', content: 'stream please' }] });
  const begun = performance.now();
  const deadline = begun + seconds * 1000;
  const rss: StreamRun['rss'] = [];
  let running = true;
  const sampler = (async () => {
    while (running) {
      rss.push({ at: (performance.now() - begun) / 1000, mib: await rssOf(pid) });
      await new Promise((r) => setTimeout(r, 250));
    }
  })();
  const ttfts: number[] = [];
  await Promise.all(
    Array.from({ length: STREAMS }, async () => {
      while (performance.now() < deadline) {
        const started = performance.now();
        const res = await pool.request({ path: '/v1/chat/completions', method: 'POST', headers: t.headers, body });
        let ttft = NaN;
        for await (const _chunk of res.body) if (Number.isNaN(ttft)) ttft = performance.now() - started;
        if (res.statusCode !== 200) throw new Error(`${t.name} stream answered ${res.statusCode}`);
        ttfts.push(ttft);
      }
    }),
  );
  running = false;
  await sampler;
  await pool.close();
  ttfts.sort((a, b) => a - b);
  return { streams: ttfts.length, ttftP50: percentile(ttfts, 0.5), ttftP99: percentile(ttfts, 0.99), rss };
}

/** The highest RSS in each SPAN_SECONDS span of a run, in MiB. */
const rssBySpan = (run: StreamRun) => {
  const spans: number[] = [];
  for (const { at, mib } of run.rss) {
    const i = Math.floor(at / SPAN_SECONDS);
    spans[i] = Math.max(spans[i] ?? 0, mib);
  }
  return spans.map((m) => m.toFixed(0)).join(', ');
};

interface GcPause {
  /** ms since the process started, as --trace-gc prints it */
  at: number;
  kind: 'scavenge' | 'full';
  ms: number;
  /** Heap in use after it, MB. */
  afterMb: number;
}

/** The GC pauses a process run with --trace-gc has logged so far. */
const gcPauses = async (logFile: string): Promise<GcPause[]> =>
  [
    ...(await readFile(logFile, 'utf8')).matchAll(
      / (\d+) ms: (Scavenge|Mark-Compact)(?: \([a-z ]+\))? [\d.]+ \([\d.]+\) -> ([\d.]+) \([\d.]+\) MB, pooled: [\d.]+ MB, ([\d.]+) \//g,
    ),
  ].map((m) => ({
    at: Number(m[1]),
    kind: m[2] === 'Scavenge' ? 'scavenge' : 'full',
    afterMb: Number(m[3]),
    ms: Number(m[4]),
  }));

/** How long a process has run, in ms, on the clock --trace-gc uses (process start), from /proc (10 ms ticks). */
const uptimeMs = async (pid: number) => {
  const startTicks = Number((await readFile(`/proc/${pid}/stat`, 'utf8')).replace(/^.*\) /s, '').split(' ')[19]);
  const sinceBoot = Number((await readFile('/proc/uptime', 'utf8')).split(' ')[0]);
  return (sinceBoot - startTicks / 100) * 1000;
};

/** Where the gateway's /metrics is, and a platform operator's key: only operators read it. */
interface Scrape {
  url: string;
  operatorKey: string;
}
const metricsText = async (s: Scrape) => {
  const res = await fetch(`${s.url}/metrics`, { headers: { authorization: `Bearer ${s.operatorKey}` } });
  if (!res.ok) throw new Error(`GET /metrics: ${res.status} ${await res.text()}`);
  return res.text();
};
/** The value of an unlabelled series in a Prometheus exposition. */
const metric = (text: string, name: string) => new RegExp(`^${name} (\\S+)`, 'm').exec(text)?.[1];

/** prom-client samples the event loop every 10 ms and records the whole interval between samples. */
const LAG_SAMPLE_MS = 10;

/** The event-loop delay prom-client measured since the last scrape (it resets its histogram at every scrape), in ms beyond the sampling interval. */
async function eventLoopLag(s: Scrape): Promise<{ p99: number; max: number }> {
  const text = await metricsText(s);
  const read = (name: string) => Number(metric(text, name) ?? NaN) * 1000 - LAG_SAMPLE_MS;
  return { p99: read('nodejs_eventloop_lag_p99_seconds'), max: read('nodejs_eventloop_lag_max_seconds') };
}

/** Where a process's memory is, from its prom-client default metrics (MiB): V8 heap committed and in use by space, and off-heap (Buffers). */
async function memoryOf(s: Scrape): Promise<string> {
  const text = await metricsText(s);
  const mb = (v: string | undefined) => (Number(v ?? NaN) / 2 ** 20).toFixed(0);
  const read = (name: string) => mb(metric(text, name));
  const used = new Map(
    [...text.matchAll(/^nodejs_heap_space_size_used_bytes\{space="(\w+)"\} (\S+)/gm)].map((m) => [m[1], m[2]]),
  );
  const spaces = [...text.matchAll(/^nodejs_heap_space_size_total_bytes\{space="(\w+)"\} (\S+)/gm)]
    .filter((m) => Number(m[2]) >= 2 ** 20)
    .map((m) => `${m[1]} ${mb(used.get(m[1]!))}/${mb(m[2])}`);
  return `heap ${read('nodejs_heap_size_used_bytes')} used of ${read('nodejs_heap_size_total_bytes')} (${spaces.join(', ')}), external ${read('nodejs_external_memory_bytes')}`;
}

/** "median [min – max]" of per-round figures. */
const spread = (xs: number[], digits: number) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
  return `${m.toFixed(digits)} [${s[0]!.toFixed(digits)} – ${s[s.length - 1]!.toFixed(digits)}]`;
};

interface RoundFigures {
  rps: number;
  cpuUsPerRequest: number;
  p50: number;
  p99: number;
  /** SSE streams/s and CPU per stream (fixed-reply upstream only). */
  sse?: { rps: number; cpuUsPerRequest: number };
}

async function main(): Promise<void> {
  const dataDir = path.join(ROOT, '.data', 'bench', `run-${process.pid}`);
  const procs: ManagedProcess[] = [];
  const stack = await startLocalStack({ dataDir, ports: await randomPorts() });
  try {
    const db = createPool(stack.env.DATABASE_URL!, 4);
    await migrate(db);
    const [upPort, fixedPort, rawPort, rawFixedPort, apiPort] = [
      await freePort(),
      await freePort(),
      await freePort(),
      await freePort(),
      await freePort(),
    ];
    const model = await startProcess({
      name: 'reference-model',
      ...tsx('deploy/dev/model-server/main.ts', ['--port', String(upPort), '--name', 'bench']),
      dataDir,
    });
    procs.push(model);
    const fixed = await startProcess({
      name: 'fixed-upstream',
      ...node('test/bench/gateway/fixed-upstream.mts'),
      dataDir,
      env: { PORT: String(fixedPort) },
    });
    procs.push(fixed);
    // One raw proxy per upstream, as the gateway routes one model to each.
    const raw = await startProcess({
      name: 'raw-proxy',
      ...node('test/bench/gateway/raw-proxy.mts', [], proxyFlags),
      dataDir,
      env: { PORT: String(rawPort), UPSTREAM_URL: `http://127.0.0.1:${upPort}` },
    });
    procs.push(raw);
    const rawFixed = await startProcess({
      name: 'raw-proxy-fixed',
      ...node('test/bench/gateway/raw-proxy.mts', [], proxyFlags),
      dataDir,
      env: { PORT: String(rawFixedPort), UPSTREAM_URL: `http://127.0.0.1:${fixedPort}` },
    });
    procs.push(rawFixed);
    // `npm run bench:gateway` compiles first; the gateway runs from dist/ as in production.
    const api = await startProcess({
      name: 'gateway',
      ...node('dist/roles/gateway.js', [], ['--trace-gc', ...proxyFlags]),
      dataDir,
      env: { ...stack.env, API_PORT: String(apiPort), LOG_LEVEL: 'warn' },
    });
    procs.push(api);
    const baselinePort = await freePort();
    const baseline =
      BASELINE_DIST &&
      (await startProcess({
        name: 'gateway-baseline',
        command: process.execPath,
        // The gateway's own flags, --trace-gc included, so the two builds differ in nothing else.
        args: ['--trace-gc', ...proxyFlags, path.join(path.resolve(BASELINE_DIST), 'roles', 'gateway.js')],
        dataDir,
        env: { ...stack.env, API_PORT: String(baselinePort), LOG_LEVEL: 'warn' },
      }));
    if (baseline) procs.push(baseline);
    const tenants = new TenantStore(db);
    await tenants.createTenant('bench', 'bench');
    const { key } = await tenants.createApiKey('bench', 'bench', 'developer');
    const scrape: Scrape = {
      url: `http://127.0.0.1:${apiPort}`,
      operatorKey: (await tenants.createPlatformKey('bench-metrics')).key,
    };
    await serveModel(db, 'bench', MODEL, { '1': `http://127.0.0.1:${upPort}/v1` }, { stable: '1' });
    await serveModel(db, 'bench', FIXED_MODEL, { '1': `http://127.0.0.1:${fixedPort}/v1` }, { stable: '1' });
    // Generous limits, so the leasing path runs without refusing anything.
    await new LimitStore(db).setLimit({
      tenantId: 'bench',
      subject: '',
      windowSeconds: 60,
      maxRequests: 10_000_000,
      maxTokens: 10_000_000_000,
    });
    for (const port of [upPort, fixedPort, rawPort, rawFixedPort, apiPort, ...(baseline ? [baselinePort] : [])])
      await waitFor(
        `port ${port}`,
        async () => (await fetch(`http://127.0.0.1:${port}/v1/models`).catch(() => undefined)) !== undefined,
      );

    const json = { 'content-type': 'application/json' };
    const gatewayHeaders = { ...json, authorization: `Bearer ${key}` };
    const direct: Target = { name: 'direct', url: `http://127.0.0.1:${upPort}`, pid: model.pid, headers: json };
    const rawProxy: Target = { name: 'raw proxy', url: `http://127.0.0.1:${rawPort}`, pid: raw.pid, headers: json };
    const gateway: Target = {
      name: 'gateway',
      url: `http://127.0.0.1:${apiPort}`,
      pid: api.pid,
      headers: gatewayHeaders,
    };
    const upstreams = {
      fixed: {
        title: 'fixed-reply upstream (answers in microseconds)',
        model: FIXED_MODEL,
        targets: [
          { name: 'direct', url: `http://127.0.0.1:${fixedPort}`, pid: fixed.pid, headers: json },
          { name: 'raw proxy', url: `http://127.0.0.1:${rawFixedPort}`, pid: rawFixed.pid, headers: json },
          gateway,
          ...(baseline
            ? [{ ...gateway, name: 'baseline', url: `http://127.0.0.1:${baselinePort}`, pid: baseline.pid }]
            : []),
        ],
      },
      reference: { title: 'reference model server', model: MODEL, targets: [direct, rawProxy, gateway] },
    };
    const bodyOf = (m: string, stream = false) =>
      JSON.stringify({
        model: m,
        max_tokens: 8,
        ...(stream ? { stream: true } : {}),
        messages: [{ role: 'user', content: 'hello benchmark' }],
      });
    const baselineTarget = upstreams.fixed.targets.find((t) => t.name === 'baseline');
    if (baselineTarget)
      await waitFor(
        'the baseline gateway to route',
        async () =>
          await call(new HttpPool(baselineTarget.url), baselineTarget, bodyOf(FIXED_MODEL)).then(
            () => true,
            () => false,
          ),
      );
    for (const m of [MODEL, FIXED_MODEL])
      await waitFor(
        `the gateway to route ${m}`,
        async () =>
          await call(new HttpPool(gateway.url), gateway, bodyOf(m)).then(
            () => true,
            () => false,
          ),
      );

    console.log(
      `${ROUNDS} rounds per upstream; each target: ${CONCURRENCY} callers back to back for ${DURATION_MS / 1000} s, then ${RATE} requests/s open loop for ${DURATION_MS / 1000} s; ` +
        `with the fixed-reply upstream also ${CONCURRENCY} callers of SSE streams (20 events) for ${DURATION_MS / 1000} s. ` +
        `${os.cpus().length} cores, load average ${os
          .loadavg()
          .map((l) => l.toFixed(2))
          .join(' ')}`,
    );
    for (const which of UPSTREAMS) {
      const { title, model: modelId, targets } = upstreams[which];
      const body = bodyOf(modelId);
      const sseBody = bodyOf(modelId, true);
      const rounds: Record<string, RoundFigures>[] = [];
      const lags: { p99: number; max: number }[] = [];
      const pauses: GcPause[][] = [];
      console.log(`\n== ${title}`);
      for (let r = 0; r < ROUNDS; r++) {
        const round: Record<string, RoundFigures> = {};
        // The order rotates, so no target always runs first (or last) in a round.
        for (const t of [...targets.slice(r % targets.length), ...targets.slice(0, r % targets.length)]) {
          const tp = await throughput(t, body);
          // The gateway's own event-loop delay over its open-loop run (prom-client resets it at every scrape): a
          // stall inside the gateway shows here, and so does the OS not running the process; a busy load generator does not.
          if (t === gateway) await eventLoopLag(scrape);
          const from = await uptimeMs(api.pid);
          round[t.name] = { ...tp, ...(await latencyAtRate(t, body)) };
          if (t === gateway) {
            lags.push(await eventLoopLag(scrape));
            pauses.push(
              (await gcPauses(api.logFile)).filter((g) => g.at >= from && g.at <= from + DURATION_MS + 1_000),
            );
          }
          if (which === 'fixed') round[t.name]!.sse = await throughput(t, sseBody);
        }
        rounds.push(round);
        console.log(`round ${r + 1}`);
        for (const t of targets) {
          const f = round[t.name]!;
          console.log(
            `  ${t.name.padEnd(10)} ${f.rps.toFixed(0).padStart(6)} req/s  ${f.cpuUsPerRequest.toFixed(0).padStart(4)} µs CPU/request   at ${RATE}/s: p50 ${f.p50.toFixed(2)} ms  p99 ${f.p99.toFixed(2)} ms` +
              (f.sse
                ? `   SSE ${f.sse.rps.toFixed(0).padStart(5)} streams/s  ${f.sse.cpuUsPerRequest.toFixed(0).padStart(4)} µs CPU/stream`
                : ''),
          );
        }
        const longest = (kind: GcPause['kind']) =>
          Math.max(0, ...pauses[r]!.filter((g) => g.kind === kind).map((g) => g.ms)).toFixed(1);
        const count = (kind: GcPause['kind']) => pauses[r]!.filter((g) => g.kind === kind).length;
        console.log(
          `  gateway event-loop delay at ${RATE}/s: p99 ${lags[r]!.p99.toFixed(1)} ms, max ${lags[r]!.max.toFixed(1)} ms (its own stalls, or the OS not running it); ` +
            `its GC meanwhile: ${count('scavenge')} scavenges (longest ${longest('scavenge')} ms), ${count('full')} full (longest ${longest('full')} ms)`,
        );
      }
      const per = (f: (r: Record<string, RoundFigures>) => number) => rounds.map(f);
      console.log(`over ${ROUNDS} rounds (${title}): median [min – max]`);
      console.log(
        `  throughput gateway/raw proxy       ${spread(
          per((r) => r.gateway!.rps / r['raw proxy']!.rps),
          2,
        )}  (target >= 0.85);  raw proxy/direct ${spread(
          per((r) => r['raw proxy']!.rps / r.direct!.rps),
          2,
        )}`,
      );
      if (which === 'fixed') {
        console.log(
          `  SSE streams/s gateway/raw proxy    ${spread(
            per((r) => r.gateway!.sse!.rps / r['raw proxy']!.sse!.rps),
            2,
          )}  (target >= 0.85);  CPU per stream gateway/raw ${spread(
            per((r) => r.gateway!.sse!.cpuUsPerRequest / r['raw proxy']!.sse!.cpuUsPerRequest),
            2,
          )}`,
        );
      }
      // Where the proxy's own CPU is the bottleneck, its requests/s is the inverse of its CPU per request.
      console.log(
        `  CPU per request gateway/raw proxy  ${spread(
          per((r) => r.gateway!.cpuUsPerRequest / r['raw proxy']!.cpuUsPerRequest),
          2,
        )}  (target <= 1.2)`,
      );
      console.log(
        `  at ${RATE}/s, gateway over raw proxy  p50 ${spread(
          per((r) => r.gateway!.p50 - r['raw proxy']!.p50),
          2,
        )} ms (target <= 0.5)  p99 ${spread(
          per((r) => r.gateway!.p99 - r['raw proxy']!.p99),
          2,
        )} ms (printed, not targeted)`,
      );
      console.log(
        `  at ${RATE}/s, raw proxy over direct   p50 ${spread(
          per((r) => r['raw proxy']!.p50 - r.direct!.p50),
          2,
        )} ms  p99 ${spread(
          per((r) => r['raw proxy']!.p99 - r.direct!.p99),
          2,
        )} ms;  gateway p99 ${spread(
          per((r) => r.gateway!.p99),
          2,
        )} ms`,
      );
      if (rounds[0]!.baseline) {
        const vsRaw = (f: (t: RoundFigures) => number) =>
          spread(
            per((r) => f(r.baseline!) / f(r['raw proxy']!)),
            2,
          );
        console.log(
          `  baseline build (${BASELINE_DIST}) / raw proxy: throughput ${vsRaw((t) => t.rps)}, SSE ${vsRaw((t) => t.sse!.rps)}, ` +
            `CPU per request ${vsRaw((t) => t.cpuUsPerRequest)}, CPU per stream ${vsRaw((t) => t.sse!.cpuUsPerRequest)}; ` +
            `p50 over raw proxy ${spread(
              per((r) => r.baseline!.p50 - r['raw proxy']!.p50),
              2,
            )} ms`,
        );
      }
    }
    async function longStreams(): Promise<void> {
      await fetch(`http://127.0.0.1:${upPort}/admin/faults`, { method: 'POST', body: JSON.stringify(STREAM_FAULTS) });
      console.log(
        `\n${STREAMS} streams open at all times (first token after ${STREAM_FAULTS.ttftMs} ms, then ${STREAM_FAULTS.replyTokens} tokens ${STREAM_FAULTS.tokenIntervalMs} ms apart at the upstream); ` +
          `${DIRECT_STREAM_SECONDS} s direct, ${STREAM_SECONDS} s through each proxy; RSS as its highest value in each ${SPAN_SECONDS} s`,
      );
      const base = await steadyStreams(direct, model.pid, DIRECT_STREAM_SECONDS);
      console.log(
        `direct     ${base.streams} streams, TTFT p50 ${base.ttftP50.toFixed(1)} ms p99 ${base.ttftP99.toFixed(1)} ms`,
      );
      for (const [t, pid] of [
        [rawProxy, raw.pid],
        [gateway, api.pid],
      ] as const) {
        const from = await uptimeMs(api.pid);
        const run = await steadyStreams(t, pid, STREAM_SECONDS);
        console.log(
          `${t.name.padEnd(10)} ${run.streams} streams, TTFT p50 ${run.ttftP50.toFixed(1)} ms p99 ${run.ttftP99.toFixed(1)} ms (added p50 ${(run.ttftP50 - base.ttftP50).toFixed(1)} ms); ` +
            `RSS MiB ${rssBySpan(run)}`,
        );
        if (t === gateway) {
          const full = (await gcPauses(api.logFile)).filter((g) => g.kind === 'full' && g.at >= from);
          console.log(
            `  gateway full GCs meanwhile: ${full.length}, heap left by each (MB): ${full.map((g) => g.afterMb.toFixed(1)).join(', ')}; now ${await memoryOf(scrape)}`,
          );
        }
      }
      // A stream's state lives long enough to be promoted to the old generation, so ended streams leave garbage
      // there until V8 next marks it, and RSS climbs between full GCs: the run is long enough to show whether the
      // peaks stay level. Once idle, V8's memory reducer gives memory back; the heap left after each full collection
      // is what is really held, the figure a leak would grow.
      const fullGcs = async () => (await gcPauses(api.logFile)).filter((g) => g.kind === 'full');
      const beforeIdle = (await fullGcs()).length;
      const idle: number[] = [];
      for (let s = 0; s < IDLE_SECONDS && (await fullGcs()).length === beforeIdle; s++) {
        await new Promise((r) => setTimeout(r, 1_000));
        idle.push(await rssOf(api.pid));
      }
      const gcs = await fullGcs();
      console.log(
        `gateway heap left by each full GC (MB, in order; the last ${gcs.length - beforeIdle ? 'after' : 'none within'} ${idle.length} s idle): ${gcs.map((g) => g.afterMb.toFixed(1)).join(', ')}`,
      );
      console.log(
        `gateway RSS MiB after the idle spell ${(await rssOf(api.pid)).toFixed(0)}: ${await memoryOf(scrape)}`,
      );
    }
    // BENCH_STREAM_SECONDS=0 ends the run with the request rounds (a quick look, or a profile of them alone).
    if (STREAM_SECONDS > 0) await longStreams();
    await db.end();
  } finally {
    for (const p of procs.reverse()) await p.stop();
    await stack.stop();
  }
}

runScript(main);
