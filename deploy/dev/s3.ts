import { execFile } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { portOpen, runningPid, startProcess, tail, terminate, waitFor, type ManagedProcess } from './process';

const run = promisify(execFile);

export interface LocalS3 {
  endpoint: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** Stops the server process (the data stays); `start()` brings it back on the same port and folder. */
  stop(): Promise<void>;
  start(): Promise<void>;
}

/** versitygw built and cached by deploy/dev/s3/install.sh. */
export async function versitygwExecutable(): Promise<string> {
  const { stdout } = await run('bash', [path.join(__dirname, 's3', 'install.sh')], { maxBuffer: 1 << 20 });
  return stdout.trim().split('\n').pop()!;
}

/**
 * A real S3 server for dev and tests: versitygw's posix backend serving buckets as folders of `dataDir`, with its
 * internal IAM (users in `dataDir/s3-iam`, uncached so a removed user is refused at once) and its admin API on the
 * S3 port; the platform's credential is the root account.
 * Idempotent like the other local servers: a running one in the same folder is reused.
 */
export async function startLocalS3(opts: { dataDir: string; port?: number }): Promise<LocalS3> {
  const port = opts.port ?? 7070;
  const accessKeyId = 'llmhub-dev';
  const secretAccessKey = 'llmhub-dev-secret';
  const root = path.join(opts.dataDir, 's3');
  const iamDir = path.join(opts.dataDir, 's3-iam');
  await mkdir(root, { recursive: true });
  await mkdir(iamDir, { recursive: true });
  const executable = await versitygwExecutable();
  let proc: ManagedProcess | undefined;
  let reusedPid = await runningPid(opts.dataDir, 'versitygw');

  const start = async () => {
    if (reusedPid && (await portOpen(port))) return;
    reusedPid = undefined;
    proc = await startProcess({
      name: 'versitygw',
      command: executable,
      args: [
        '--port',
        `127.0.0.1:${port}`,
        '--access',
        accessKeyId,
        '--secret',
        secretAccessKey,
        '--quiet',
        // Reuse connections as S3 does: by default versitygw answers every request with `Connection: close`, so each
        // request paid a TCP connection on both sides (500 GETs of a 700-byte object: 500 connections, 1.5x the
        // client's CPU).
        '--keep-alive',
        '--iam-dir',
        iamDir,
        '--iam-cache-disable',
        'posix',
        root,
      ],
      dataDir: opts.dataDir,
    });
    try {
      await waitFor(`S3 on 127.0.0.1:${port}`, () => portOpen(port), 60_000, 100);
    } catch (err) {
      throw new Error(`${(err as Error).message}\n${await tail(proc.logFile)}`, { cause: err });
    }
  };
  await start();
  return {
    endpoint: `http://127.0.0.1:${port}`,
    region: 'us-east-1',
    accessKeyId,
    secretAccessKey,
    start,
    async stop() {
      if (reusedPid) await terminate(reusedPid);
      await proc?.stop();
      proc = undefined;
      reusedPid = undefined;
    },
  };
}
