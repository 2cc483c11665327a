import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { NativeConnection } from '@temporalio/worker';
import type { Pool } from 'pg';
import { loadConfig, type Config } from '../../common/config';
import { migrate } from '../../common/store/migrate';
import { createPool } from '../../common/store/pool';
import { randomPorts, startLocalStack } from '../../deploy/dev/stack';

export interface ScratchStack {
  config: Config;
  /** The stack's environment (addresses, credentials), for a role started as its own process. */
  env: NodeJS.ProcessEnv;
  dataDir: string;
  db: Pool;
  client: Client;
  native: NativeConnection;
}

/** Runs `fn` against a throw-away stack of real servers (scripts outside jest: recording, benchmarks), then removes it. */
export async function withScratchStack<T>(name: string, fn: (s: ScratchStack) => Promise<T>): Promise<T> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), `llmhub-${name}-`));
  const stack = await startLocalStack({ dataDir, ports: await randomPorts() });
  const config = loadConfig({ ...process.env, ...stack.env, LOG_LEVEL: 'warn' });
  const db = createPool(config.DATABASE_URL, 8);
  const connection = await Connection.connect({ address: config.TEMPORAL_ADDRESS });
  const native = await NativeConnection.connect({ address: config.TEMPORAL_ADDRESS });
  try {
    await migrate(db);
    return await fn({ config, env: stack.env, dataDir, db, client: new Client({ connection }), native });
  } finally {
    await native.close();
    await connection.close();
    await db.end();
    await stack.stop();
    await rm(dataDir, { recursive: true, force: true });
  }
}
