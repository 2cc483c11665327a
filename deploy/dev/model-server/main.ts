/**
 * Runs the reference model server (a test/dev fixture, not a model) as its own process:
 *   node --import tsx deploy/dev/model-server/main.ts --port 8001 --name stable --ttft-ms 50 --error-rate 0.01
 * (the llmhub/model-server image runs the built main.js with --host 0.0.0.0 --port 8000 from its environment).
 * Every flag also reads from the environment (REFERENCE_MODEL_<FLAG>, e.g. REFERENCE_MODEL_TTFT_MS);
 * faults change at run time with `POST /admin/faults` (JSON of the same fields, camelCase).
 * As a model version's pod: `--served-model-name` (what the platform's Deployment passes, vLLM's flag) names the model;
 * `--log-requests 1` writes one JSON line per request to stdout (what `kubectl logs` shows); `--not-ready 1` fails the
 * readiness probe and `--exit-after-ms N` exits with status 1 after N ms (a crash loop under a Deployment).
 */
import { parseArgs } from 'node:util';
import { DEFAULT_FAULTS, startReferenceModelServer, type Faults } from './server';

const FLAGS = {
  host: 'host',
  port: 'port',
  name: 'name',
  model: 'model',
  'latency-ms': 'latencyMs',
  'ttft-ms': 'ttftMs',
  'token-interval-ms': 'tokenIntervalMs',
  'error-rate': 'errorRate',
  'error-status': 'errorStatus',
  'fail-after-chunks': 'failAfterChunks',
  'reply-tokens': 'replyTokens',
  'not-ready': 'notReady',
  'served-model-name': 'model',
  'log-requests': 'logRequests',
  'exit-after-ms': 'exitAfterMs',
} as const;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: Object.fromEntries(
      Object.keys(FLAGS).map((f) => [
        f,
        { type: 'string' as const, multiple: FLAGS[f as keyof typeof FLAGS] === 'model' },
      ]),
    ),
  });
  const read = (flag: keyof typeof FLAGS): string | string[] | undefined =>
    values[flag] ?? process.env[`REFERENCE_MODEL_${flag.toUpperCase().replace(/-/g, '_')}`];
  const faults: Partial<Faults> = {};
  for (const flag of Object.keys(FLAGS) as (keyof typeof FLAGS)[]) {
    const key = FLAGS[flag];
    const v = read(flag);
    if (v === undefined || !(key in DEFAULT_FAULTS)) continue;
    const n = Number(v);
    if (!Number.isFinite(n)) throw new Error(`--${flag} must be a number, got '${String(v)}'`);
    (faults as Record<string, number>)[key] = n;
  }
  const model = read('served-model-name') ?? read('model');
  const server = await startReferenceModelServer({
    name: (read('name') as string | undefined) ?? 'reference',
    host: read('host') as string | undefined,
    port: Number(read('port') ?? 0),
    models: model === undefined ? undefined : Array.isArray(model) ? model : [model],
    faults,
    logRequest: read('log-requests') === '1' ? (line) => console.log(line) : undefined,
  });
  const exitAfterMs = Number(read('exit-after-ms') ?? NaN);
  if (exitAfterMs >= 0) {
    setTimeout(() => {
      console.error(JSON.stringify({ msg: 'exiting as asked (--exit-after-ms)', name: server.name }));
      process.exit(1);
    }, exitAfterMs);
  }
  console.log(
    JSON.stringify({
      msg: 'reference model server listening',
      name: server.name,
      url: server.url,
      faults: server.faults,
    }),
  );
  const stop = () => void server.close().then(() => process.exit(0));
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

main().catch((err) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
