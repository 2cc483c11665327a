import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { Connection } from '@temporalio/client';
import { customSearchAttributes } from '../contracts/search-attributes';
import { runningPid, startProcess, tail, terminate, waitFor } from '../deploy/dev/process';

const run = promisify(execFile);

export interface TemporalDevServer {
  address: string;
  uiUrl: string | undefined;
  executable: string;
  stop(): Promise<void>;
}

/** Finds (or installs, offline) the `temporal` CLI via temporal/install.sh. */
export async function temporalExecutable(): Promise<string> {
  const { stdout } = await run('bash', [path.join(__dirname, 'install.sh')], { maxBuffer: 1 << 20 });
  return stdout.trim().split('\n').pop()!;
}

async function healthy(address: string): Promise<boolean> {
  const conn = await Connection.connect({ address, connectTimeout: '2s' });
  try {
    await conn.workflowService.getSystemInfo({});
    return true;
  } finally {
    await conn.close();
  }
}

const TYPE_NAMES: Record<string, string> = {
  KEYWORD: 'Keyword',
  TEXT: 'Text',
  INT: 'Int',
  DOUBLE: 'Double',
  BOOL: 'Bool',
  DATETIME: 'Datetime',
  KEYWORD_LIST: 'KeywordList',
};

/**
 * Starts `temporal server start-dev` with a SQLite file in `dataDir` and the platform's search attributes,
 * or returns the one already running there (idempotent). `uiPort: null` runs it headless.
 */
export async function startTemporalDevServer(opts: {
  dataDir: string;
  port?: number;
  uiPort?: number | null;
  ip?: string;
}): Promise<TemporalDevServer> {
  const ip = opts.ip ?? '127.0.0.1';
  const port = opts.port ?? 7233;
  const address = `${ip}:${port}`;
  const uiPort = opts.uiPort === undefined ? port + 1000 : opts.uiPort;
  const uiUrl = uiPort === null ? undefined : `http://${ip}:${uiPort}`;
  const executable = await temporalExecutable();

  const existing = await runningPid(opts.dataDir, 'temporal');
  if (existing && (await healthy(address).catch(() => false))) {
    return { address, uiUrl, executable, stop: () => terminate(existing) };
  }
  const args = [
    'server',
    'start-dev',
    '--ip',
    ip,
    '--port',
    String(port),
    '--db-filename',
    path.join(opts.dataDir, 'temporal.sqlite'),
    '--log-level',
    'warn',
  ];
  args.push(...(uiPort === null ? ['--headless'] : ['--ui-port', String(uiPort)]));
  for (const key of customSearchAttributes) args.push('--search-attribute', `${key.name}=${TYPE_NAMES[key.type]}`);

  const proc = await startProcess({ name: 'temporal', command: executable, args, dataDir: opts.dataDir });
  try {
    await waitFor(`Temporal at ${address}`, () => healthy(address), 120_000, 250);
  } catch (err) {
    await proc.stop();
    throw new Error(`${(err as Error).message}\n--- ${proc.logFile} ---\n${await tail(proc.logFile)}`, { cause: err });
  }
  return { address, uiUrl, executable, stop: () => proc.stop() };
}
