import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { S3ObjectStore } from '../../common/objectstore';
import { embeddingModelDir } from './models';
import { startTemporalDevServer, type TemporalDevServer } from '../../temporal/server';
import { startLocalPostgres, type LocalPostgres } from './postgres';
import { freePorts } from './process';
import { startLocalS3, type LocalS3 } from './s3';

/** Ports of the local stack: fixed for `dev` (so URLs are stable), free ones for tests. */
export interface StackPorts {
  temporal: number;
  temporalUi: number | null;
  postgres: number;
  s3: number;
}
export const DEV_PORTS: StackPorts = { temporal: 7233, temporalUi: 8233, postgres: 5433, s3: 7070 };

export async function randomPorts(): Promise<StackPorts> {
  const [temporal, postgres, s3] = await freePorts(3);
  return { temporal: temporal!, temporalUi: null, postgres: postgres!, s3: s3! };
}

export interface LocalStack {
  temporal: TemporalDevServer;
  postgres: LocalPostgres;
  s3: LocalS3;
  /** The platform's configuration variables pointing at this stack (see common/config.ts). */
  env: Record<string, string>;
  stop(): Promise<void>;
}

const PLATFORM_BUCKET = 'llmhub';

/** Starts the real servers the platform needs (Temporal, PostgreSQL, S3), in parallel, under one data dir. */
export async function startLocalStack(opts: { dataDir: string; ports: StackPorts }): Promise<LocalStack> {
  await mkdir(opts.dataDir, { recursive: true });
  const [temporal, postgres, s3, modelDir] = await Promise.all([
    startTemporalDevServer({ dataDir: opts.dataDir, port: opts.ports.temporal, uiPort: opts.ports.temporalUi }),
    startLocalPostgres({ dataDir: opts.dataDir, port: opts.ports.postgres }),
    startLocalS3({ dataDir: opts.dataDir, port: opts.ports.s3 }),
    embeddingModelDir('per-channel'),
  ]);
  await new S3ObjectStore({
    endpoint: s3.endpoint,
    region: s3.region,
    accessKeyId: s3.accessKeyId,
    secretAccessKey: s3.secretAccessKey,
    forcePathStyle: true,
  }).ensureBucket(PLATFORM_BUCKET);
  return {
    temporal,
    postgres,
    s3,
    env: {
      TEMPORAL_ADDRESS: temporal.address,
      DATABASE_URL: postgres.databaseUrl,
      S3_ENDPOINT: s3.endpoint,
      S3_REGION: s3.region,
      S3_ACCESS_KEY_ID: s3.accessKeyId,
      S3_SECRET_ACCESS_KEY: s3.secretAccessKey,
      PLATFORM_BUCKET,
      // Tenants get S3 users of their own through versitygw's admin API (common/storage-admin).
      LLMHUB_STORAGE_ADMIN: 'versitygw',
      EMBEDDING_MODEL_DIR: modelDir,
      LANCEDB_DIR: path.join(opts.dataDir, 'lancedb'),
      // The local cluster's pod behaviours (deploy/dev/kube/kwok-stages.yaml) are chosen by this annotation.
      LLMHUB_POD_METADATA_KEYS: 'llmhub.dev/kwok-behaviour',
    },
    async stop() {
      await Promise.allSettled([temporal.stop(), postgres.stop(), s3.stop()]);
    },
  };
}
