import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';

/** A server process of the dev/test stack, started detached with its output in a log file. */
export interface ManagedProcess {
  pid: number;
  logFile: string;
  stop(): Promise<void>;
}

/** Ports the OS reports free on the host right now, held open together while collected so they are distinct. */
export async function freePorts(count: number, host = '127.0.0.1'): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise<net.Server>((resolve, reject) => {
          const srv = net.createServer();
          srv.once('error', reject);
          srv.listen(0, host, () => resolve(srv));
        }),
    ),
  );
  const ports = servers.map((srv) => (srv.address() as net.AddressInfo).port);
  await Promise.all(servers.map((srv) => new Promise<void>((resolve) => srv.close(() => resolve()))));
  return ports;
}

export const freePort = async (host = '127.0.0.1'): Promise<number> => (await freePorts(1, host))[0]!;

export function portOpen(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ port, host });
    sock.once('connect', () => {
      sock.destroy();
      resolve(true);
    });
    sock.once('error', () => resolve(false));
  });
}

/**
 * Polls `fn` until it returns a value other than undefined/false (errors count as "not yet").
 * Deadlines are generous because a loaded 2-core CI machine is slow; callers wait on conditions, never on time.
 */
export async function pollFor<T>(
  what: string,
  fn: () => Promise<T | undefined | false>,
  timeoutMs = 120_000,
  intervalMs = 200,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() > deadline)
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what}${lastErr ? ` (last error: ${String(lastErr)})` : ''}`,
      );
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

export async function waitFor(
  what: string,
  check: () => Promise<boolean>,
  timeoutMs = 120_000,
  intervalMs = 200,
): Promise<void> {
  await pollFor(what, check, timeoutMs, intervalMs);
}

export const isAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** Sends SIGTERM, then SIGKILL if the process has not gone within `graceMs`. */
export async function terminate(pid: number, graceMs = 10_000): Promise<void> {
  if (!isAlive(pid)) return;
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return;
  }
  const deadline = Date.now() + graceMs;
  while (isAlive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  if (isAlive(pid)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
    while (isAlive(pid)) await new Promise((r) => setTimeout(r, 50));
  }
}

export async function startProcess(opts: {
  name: string;
  command: string;
  args: string[];
  dataDir: string;
  env?: NodeJS.ProcessEnv;
  /**
   * false: the child gets `env` with only PATH and a HOME of its own, never this process's environment (which holds
   * the platform's credentials). For processes that run what a tenant asked for.
   */
  inheritEnv?: boolean;
}): Promise<ManagedProcess> {
  await mkdir(opts.dataDir, { recursive: true });
  const logFile = path.join(opts.dataDir, `${opts.name}.log`);
  const log = createWriteStream(logFile, { flags: 'a' });
  await new Promise((r) => log.once('open', r));
  const child: ChildProcess = spawn(opts.command, opts.args, {
    env:
      opts.inheritEnv === false
        ? { PATH: process.env.PATH, HOME: opts.dataDir, ...opts.env }
        : { ...process.env, ...opts.env },
    stdio: ['ignore', log, log],
    detached: false,
  });
  const pid = await new Promise<number>((resolve, reject) => {
    child.once('spawn', () => resolve(child.pid!));
    child.once('error', (err) => reject(new Error(`${opts.name} failed to start (${opts.command}): ${err.message}`)));
  });
  const pidFile = path.join(opts.dataDir, `${opts.name}.pid`);
  await writeFile(pidFile, String(pid));
  child.unref();
  return {
    pid,
    logFile,
    async stop() {
      await terminate(pid);
      log.end();
      await rm(pidFile, { force: true });
    },
  };
}

/** The pid recorded by a previous start, when that process still runs (so a second start reuses it). */
export async function runningPid(dataDir: string, name: string): Promise<number | undefined> {
  const pid = Number(await readFile(path.join(dataDir, `${name}.pid`), 'utf8').catch(() => ''));
  return pid > 0 && isAlive(pid) ? pid : undefined;
}

export async function tail(file: string, lines = 30): Promise<string> {
  const text = await readFile(file, 'utf8').catch(() => '');
  return text.split('\n').slice(-lines).join('\n');
}
