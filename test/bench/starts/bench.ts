/**
 * Operation-start benchmark (`npm run bench:starts`), not a test: model-version registrations (workflow type
 * registerModelVersion) started through the API (`POST /v1/models/{id}/versions`: authentication, idempotency claim
 * with the version row, the start, the audit row) and started directly with the Temporal client (the same workflow
 * type, id scheme, options and search attributes), the same number at the same concurrency, in interleaved rounds of
 * one run on one throw-away stack (short rounds, alternating which goes first, so a load that drifts on a shared
 * machine falls on both alike). Prints starts/s and p50 of each, the API / direct ratio per round (median and range;
 * target >= 0.85), and the round trips one API start makes, counted (PostgreSQL statements, Temporal calls).
 *
 * No worker polls the task queue: what is measured is the start path, not the registration's own activities.
 *
 *   npm run bench:starts [-- --starts 200 --concurrency 32 --rounds 6]   (starts per path and round)
 */
import os from 'node:os';
import { parseArgs } from 'node:util';
import {
  Client,
  Connection,
  defaultGrpcRetryOptions,
  makeGrpcRetryInterceptor,
  type ConnectionOptions,
} from '@temporalio/client';
import pg from 'pg';
import { buildApp } from '../../../api/app';
import { clustersOf } from '../../../common/config';
import { EmbedderRegistry, vectorStoreFromConfig } from '../../../common/knowledge';
import { createLogger } from '../../../common/logger';
import { s3StoreFromConfig } from '../../../common/objectstore';
import { createPool } from '../../../common/store/pool';
import { RegistryStore } from '../../../common/store/registry';
import { StorageScopeStore } from '../../../common/store/storage-scope';
import { TenantStore } from '../../../common/store/tenants';
import { modelRegistryContract } from '../../../contracts/model-registry';
import { workflowId } from '../../../contracts/operations';
import { ModelIdKey, OperationKindKey, TenantIdKey } from '../../../contracts/search-attributes';
import { withScratchStack } from '../../support/scratch-stack';
import { runScript } from '../../support/script';

const TENANT = 'bench';
const MODEL = 'bench-model';
const TASK_QUEUE = 'bench-starts';

/** Counts what this process sends: PostgreSQL statements (every pg client) and Temporal calls (by method). */
const counts = { sql: 0, grpc: new Map<string, number>() };
const query = pg.Client.prototype.query;
pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
  counts.sql++;
  return (query as (...a: unknown[]) => unknown).apply(this, args);
} as typeof query;
type Interceptor = NonNullable<ConnectionOptions['interceptors']>[number];
const countCalls: Interceptor = (options, nextCall) => {
  const method = String(options.method_definition.path).split('/').pop()!;
  counts.grpc.set(method, (counts.grpc.get(method) ?? 0) + 1);
  // The next interceptor's call, typed by grpc-js as its interface; the chain takes it as it is.
  return nextCall(options) as ReturnType<Interceptor>;
};

interface Round {
  perSecond: number;
  p50: number;
}

/** Runs `total` calls of `start`, `concurrency` at a time back to back; starts/s and the median latency. */
async function drive(total: number, concurrency: number, start: (i: number) => Promise<void>): Promise<Round> {
  const latencies: number[] = [];
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      for (let i = next++; i < total; i = next++) {
        const t = performance.now();
        await start(i);
        latencies.push(performance.now() - t);
      }
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  latencies.sort((a, b) => a - b);
  return { perSecond: total / seconds, p50: latencies[Math.floor(latencies.length / 2)]! };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const range = (xs: number[], digits: number) =>
  `${median(xs).toFixed(digits)} [${Math.min(...xs).toFixed(digits)} – ${Math.max(...xs).toFixed(digits)}]`;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      starts: { type: 'string', default: '200' },
      concurrency: { type: 'string', default: '32' },
      rounds: { type: 'string', default: '6' },
    },
  });
  const total = Number(values.starts);
  const concurrency = Number(values.concurrency);
  const rounds = Number(values.rounds);
  await withScratchStack('bench-starts', async ({ config, db }) => {
    // One connection for the API and one for the direct starts, made alike (the default retry, a call counter).
    const connect = () =>
      Connection.connect({
        address: config.TEMPORAL_ADDRESS,
        interceptors: [countCalls, makeGrpcRetryInterceptor(defaultGrpcRetryOptions())],
      });
    const [apiConnection, directConnection] = await Promise.all([connect(), connect()]);
    // The API's own pool, sized as the api role's (DATABASE_POOL_MAX).
    const apiDb = createPool(config.DATABASE_URL, config.DATABASE_POOL_MAX);
    const app = await buildApp({
      db: apiDb,
      temporal: new Client({ connection: apiConnection }),
      objects: s3StoreFromConfig(config),
      taskQueue: TASK_QUEUE,
      logger: createLogger('bench', 'error'),
      vectors: await vectorStoreFromConfig(config),
      embedders: new EmbedderRegistry(config),
      platformBucket: config.PLATFORM_BUCKET,
      clusters: clustersOf(config.LLMHUB_CLUSTERS),
    });
    const baseUrl = await app.listen({ host: '127.0.0.1', port: 0 });
    const direct = new Client({ connection: directConnection });
    try {
      const tenants = new TenantStore(db);
      await tenants.createTenant(TENANT, TENANT);
      const key = (await tenants.createApiKey(TENANT, 'bench', 'developer')).key;
      await new RegistryStore(db).createModel(TENANT, { id: MODEL, name: MODEL, description: 'bench' });
      const bucket = new StorageScopeStore(db, config.LLMHUB_TENANT_BUCKET_PREFIX).bucketOf(TENANT);
      const artifactUri = (version: string) => `s3://${bucket}/models/${MODEL}/${version}`;

      const throughApi = async (version: string) => {
        const res = await fetch(`${baseUrl}/v1/models/${MODEL}/versions`, {
          method: 'POST',
          headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', 'idempotency-key': version },
          body: JSON.stringify({ version, artifactUri: artifactUri(version) }),
        });
        if (res.status !== 202) throw new Error(`API start answered ${res.status}: ${await res.text()}`);
        await res.arrayBuffer();
      };
      // What startOperation and the registration route send, without the platform's rows.
      const directly = async (version: string) => {
        await direct.workflow.start(modelRegistryContract.workflowType, {
          taskQueue: TASK_QUEUE,
          workflowId: workflowId(modelRegistryContract.kind, TENANT, version),
          workflowIdConflictPolicy: 'USE_EXISTING',
          workflowIdReusePolicy: 'REJECT_DUPLICATE',
          args: [{ tenantId: TENANT, modelId: MODEL, version, artifactUri: artifactUri(version) }],
          typedSearchAttributes: [
            { key: TenantIdKey, value: TENANT },
            { key: OperationKindKey, value: modelRegistryContract.kind },
            { key: ModelIdKey, value: MODEL },
          ],
          staticSummary: `Register ${MODEL}@${version} from ${artifactUri(version)}`,
          workflowExecutionTimeout: '2 hours',
        });
      };

      // Warm both paths (JIT, connections, the key cache) before timing.
      await drive(64, concurrency, (i) => throughApi(`warm-api-${i}`));
      await drive(64, concurrency, (i) => directly(`warm-direct-${i}`));

      // The round trips of one API start, counted on one start alone right after another (the key cache is warm).
      await throughApi('counted-warm');
      counts.sql = 0;
      counts.grpc.clear();
      await throughApi('counted');
      const alone = { sql: counts.sql, grpc: new Map(counts.grpc) };
      const underLoad = { sql: 0, grpc: 0 };

      const ratios: number[] = [];
      const api: Round[] = [];
      const bare: Round[] = [];
      for (let r = 0; r < rounds; r++) {
        // The order alternates, so neither path always runs on a Temporal history the other just grew.
        const order = r % 2 === 0 ? (['direct', 'api'] as const) : (['api', 'direct'] as const);
        const got: Partial<Record<'direct' | 'api', Round>> = {};
        for (const path of order) {
          counts.sql = 0;
          counts.grpc.clear();
          got[path] = await drive(total, concurrency, (i) =>
            path === 'api' ? throughApi(`r${r}-api-${i}`) : directly(`r${r}-direct-${i}`),
          );
          if (path === 'api') {
            underLoad.sql += counts.sql;
            underLoad.grpc += [...counts.grpc.values()].reduce((a, b) => a + b, 0);
          }
        }
        api.push(got.api!);
        bare.push(got.direct!);
        ratios.push(got.api!.perSecond / got.direct!.perSecond);
        console.log(
          `round ${r + 1}/${rounds} (${order.join(' then ')}): direct ${got.direct!.perSecond.toFixed(1)} starts/s ` +
            `(p50 ${got.direct!.p50.toFixed(0)} ms), API ${got.api!.perSecond.toFixed(1)} starts/s ` +
            `(p50 ${got.api!.p50.toFixed(0)} ms), ratio ${ratios.at(-1)!.toFixed(2)}`,
        );
      }

      console.log(
        `\n${total} registrations per path and round, ${concurrency} at a time, ${rounds} rounds; ` +
          `${os.cpus().length} cores, load average ${os
            .loadavg()
            .map((l) => l.toFixed(2))
            .join(' ')}`,
      );
      console.log(
        `direct Temporal client: ${range(
          bare.map((b) => b.perSecond),
          1,
        )} starts/s, p50 ${range(
          bare.map((b) => b.p50),
          0,
        )} ms`,
      );
      console.log(
        `through the API:        ${range(
          api.map((b) => b.perSecond),
          1,
        )} starts/s, p50 ${range(
          api.map((b) => b.p50),
          0,
        )} ms`,
      );
      console.log(`API / direct:           ${range(ratios, 2)} (target >= 0.85)`);
      console.log(
        `round trips of one API start alone: ${alone.sql} PostgreSQL statements, Temporal: ${[...alone.grpc]
          .map(([m, n]) => `${m} ×${n}`)
          .join(', ')}`,
      );
      console.log(
        `per API start in the rounds (${concurrency} at a time; concurrent audit rows share an INSERT): ` +
          `${(underLoad.sql / (total * rounds)).toFixed(2)} PostgreSQL statements, ` +
          `${(underLoad.grpc / (total * rounds)).toFixed(2)} Temporal calls`,
      );
    } finally {
      await app.close();
      await Promise.all([apiConnection.close(), directConnection.close(), apiDb.end()]);
    }
  });
}

runScript(main);
