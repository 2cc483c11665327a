import { Client } from '@temporalio/client';
import { clustersOf } from '../../common/config';
import { EmbedderRegistry } from '../../common/knowledge';
import { createLogger } from '../../common/logger';
import type { Pool } from 'pg';
import { podMetadataKeysOf } from '../../common/workload-policy';
import { buildApp } from '../app';
import type { VectorStore } from '../../common/vectors';
import type { ObjectStore } from '../../common/objectstore';

/**
 * The clusters, pod-metadata keys and embedders of `npm run dev` (deploy/dev/dev.ts): the document lists configured
 * names as enums, so the SDK's snapshot is the dev stack's document, the one its examples run against.
 */
export const SDK_DOCUMENT_CONFIG = {
  clusters: '{"local":{"runtime":"process","stateDir":"/unused"},"kube":{"kubeconfig":"/unused"}}',
  podMetadataKeys: 'llmhub.dev/kwok-behaviour',
  embeddingModelDir: '/unused',
};

/**
 * A database that holds nothing: the gateway's route table reads one (empty) snapshot while the app starts, and its
 * change feed's connection to port 1 fails and is retried on an unref'd timer, so nothing keeps the process alive.
 */
const emptyDatabase = {
  options: { host: '127.0.0.1', port: 1 },
  query: async () => ({ rows: [], rowCount: 0 }),
  connect: async () => ({ query: emptyDatabase.query, release: () => undefined }),
  end: async () => undefined,
  on: () => emptyDatabase,
} as unknown as Pool;

/**
 * `/openapi.json` of the api role, built without any server (the Temporal connection is lazy and never used), so the
 * SDK is regenerated on a machine with no stack running.
 */
export async function openApiDocument(): Promise<unknown> {
  const db = emptyDatabase;
  const app = await buildApp({
    db,
    logger: createLogger('openapi-document', 'silent'),
    temporal: new Client(),
    objects: {} as ObjectStore,
    taskQueue: 'unused',
    vectors: {} as VectorStore,
    embedders: new EmbedderRegistry({ EMBEDDING_MODEL_DIR: SDK_DOCUMENT_CONFIG.embeddingModelDir }),
    platformBucket: 'unused',
    clusters: clustersOf(SDK_DOCUMENT_CONFIG.clusters),
    podMetadataKeys: podMetadataKeysOf(SDK_DOCUMENT_CONFIG.podMetadataKeys),
  });
  try {
    await app.ready();
    return app.swagger();
  } finally {
    await app.close();
  }
}

if (require.main === module) {
  openApiDocument().then(
    (doc) => process.stdout.write(`${JSON.stringify(doc, null, 2)}\n`),
    (err) => {
      console.error(err instanceof Error ? err.message : err);
      process.exit(1);
    },
  );
}
