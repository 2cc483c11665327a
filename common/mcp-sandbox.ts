import { execFile } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { chmod, chown, mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { getDefaultEnvironment } from '@modelcontextprotocol/sdk/client/stdio.js';

/** The uid/gid a sandboxed server runs as when the worker is root: `nobody`, which owns no platform file. */
export const SANDBOX_UID = 65534;

/** An operator's catalog server as the worker launches it: the command, its arguments and its whole environment. */
export interface StdioServerSpec {
  command: string;
  args: string[];
  env: Record<string, string>;
  /**
   * Whether it keeps the worker's network. Without it the server gets a network namespace with nothing in it: it can
   * reach neither the platform's databases nor the cloud's metadata endpoint. With it, it reaches what the worker
   * reaches (the HTTP egress policy is for tenants' URLs, not for operators' servers).
   */
  network: boolean;
}

/** What spawning through the sandbox takes: the wrapped command line, the working directory and its clean-up. */
export interface SandboxedLaunch {
  command: string;
  args: string[];
  cwd: string;
  remove(): Promise<void>;
}

export class McpSandboxError extends Error {}

const run = promisify(execFile);

function which(name: string): string {
  for (const dir of (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(path.delimiter)) {
    const file = path.join(dir, name);
    try {
      accessSync(file, constants.X_OK);
      return file;
    } catch {}
  }
  throw new McpSandboxError(
    `the MCP sandbox needs util-linux '${name}' on the worker's PATH; catalog stdio servers do not run without it`,
  );
}

/**
 * The wrapper around a catalog server: a PID namespace with its own /proc (so `/proc/$PPID` and every other process of
 * the platform are out of sight), IPC and, unless the entry asks for the network, network namespaces of its own; then,
 * before the server is executed, no capabilities, an empty bounding set and no_new_privs, so it can neither unmount
 * that /proc nor gain privileges back. As root it also becomes `nobody`;
 * otherwise a user namespace makes the PID namespace possible and keeps its root powerless outside. The server's
 * environment is exactly the entry's: the few variables the MCP SDK adds to every spawn are removed by name
 * (values never travel on a command line, where `ps` would show them).
 */
function wrapperArgs(spec: StdioServerSpec, tools: { setpriv: string; env: string }): string[] {
  const root = process.geteuid?.() === 0;
  const added = Object.keys(getDefaultEnvironment()).filter((k) => !(k in spec.env));
  return [
    ...(root ? [] : ['--user', '--map-root-user']),
    '--pid',
    '--fork',
    '--mount-proc',
    '--ipc',
    ...(spec.network ? [] : ['--net']),
    '--kill-child=SIGKILL',
    '--',
    tools.setpriv,
    ...(root ? [`--reuid=${SANDBOX_UID}`, `--regid=${SANDBOX_UID}`, '--clear-groups'] : []),
    '--inh-caps=-all',
    '--bounding-set=-all',
    '--no-new-privs',
    // A uid change clears the parent-death signal unshare set; without it a killed worker could leave the server behind.
    '--pdeathsig=SIGKILL',
    '--',
    tools.env,
    ...added.flatMap((k) => ['-u', k]),
    '--',
    spec.command,
    ...spec.args,
  ];
}

let baseDir: Promise<string> | undefined;
let probed: Promise<{ unshare: string; setpriv: string; env: string }> | undefined;

/** Sets the sandbox up once with `true` as the server: a machine where it cannot be set up is found before any server runs. */
function sandboxTools(): Promise<{ unshare: string; setpriv: string; env: string }> {
  probed ??= (async () => {
    const tools = { unshare: which('unshare'), setpriv: which('setpriv'), env: which('env') };
    try {
      await run(tools.unshare, wrapperArgs({ command: which('true'), args: [], env: {}, network: false }, tools), {
        env: getDefaultEnvironment(),
        timeout: 10_000,
      });
    } catch (err) {
      throw new McpSandboxError(
        `the MCP sandbox cannot be set up on this worker (PID namespace, ${process.geteuid?.() === 0 ? 'uid drop' : 'user namespace'}, capability drop), so catalog stdio servers are not started: ${((err as { stderr?: string }).stderr || (err as Error).message).trim()}`,
      );
    }
    return tools;
  })();
  probed.catch(() => (probed = undefined));
  return probed;
}

/**
 * Prepares one sandboxed launch of a catalog server: a fresh working directory of its own (owned by the sandbox user,
 * removed after the session) and the wrapped command line. Throws McpSandboxError, never falls back to an unsandboxed
 * spawn. Every server runs as the same `nobody`, so the directories sit in a parent nobody can list, under names no
 * one can guess: one tenant's server cannot find another's files.
 */
export async function sandboxedLaunch(spec: StdioServerSpec, owner: string): Promise<SandboxedLaunch> {
  const tools = await sandboxTools();
  // mkdtemp, not a fixed name: nobody else on the machine can have made (or swapped) it first.
  baseDir ??= mkdtemp(path.join(os.tmpdir(), 'llmhub-mcp-')).then(async (dir) => {
    await chmod(dir, 0o711);
    return dir;
  });
  const base = await baseDir;
  const cwd = path.join(base, `${owner.replace(/[^a-z0-9-]/gi, '_')}-${randomBytes(16).toString('hex')}`);
  await mkdir(cwd, { mode: 0o700 });
  if (process.geteuid?.() === 0) await chown(cwd, SANDBOX_UID, SANDBOX_UID);
  return {
    command: tools.unshare,
    args: wrapperArgs(spec, tools),
    cwd,
    remove: () => rm(cwd, { recursive: true, force: true }),
  };
}
