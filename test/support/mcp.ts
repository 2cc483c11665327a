import { spawn, type ChildProcess } from 'node:child_process';
import { chmod, copyFile, link, mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Pool } from 'pg';
import { EgressPolicy } from '../../common/egress';
import { discoverTools } from '../../common/mcp';
import { McpCatalogStore } from '../../common/store/mcp-catalog';
import type { RiskLevel } from '../../contracts/agent-run';
import { uniqueId } from './platform';

let node: Promise<string> | undefined;

/**
 * The Node binary at a path the MCP sandbox's user (uid 65534 when tests run as root) can execute: the toolchain's
 * Node lives under the 0700 home of root, so catalog entries in tests name a hard link (or a copy) of it instead.
 */
export function sandboxReachableNode(): Promise<string> {
  node ??= (async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'llmhub-test-node-'));
    await chmod(dir, 0o755);
    const file = path.join(dir, 'node');
    await link(process.execPath, file).catch(() => copyFile(process.execPath, file));
    await chmod(file, 0o755);
    return file;
  })();
  return node;
}

export const fixture = (name: string): string => path.join(__dirname, name);

/**
 * A catalog entry made without the API, for files whose worker is not running yet when they set up: the tools are
 * discovered in the sandbox from the test process (a worker would do the same).
 */
export async function seedCatalogEntry(
  db: Pool,
  prefix: string,
  args: string[],
  risks: Record<string, RiskLevel> = {},
): Promise<string> {
  const id = uniqueId(prefix);
  const command = await sandboxReachableNode();
  const catalog = new McpCatalogStore(db);
  await catalog.create({ id, description: '', command, args, env: {}, network: false, risks });
  const egress = new EgressPolicy();
  try {
    const endpoint = {
      transport: 'stdio' as const,
      catalogId: id,
      owner: 'test',
      command,
      args,
      env: {},
      network: false,
    };
    await catalog.setTools(id, await discoverTools(endpoint, { egress, timeoutMs: 30_000 }));
  } finally {
    await egress.close();
  }
  return id;
}

/** The everything MCP server over streamable HTTP on `host` (a loopback address); answers its URL and process. */
export async function startEverythingHttp(host = '127.0.0.1'): Promise<{ url: string; process: ChildProcess }> {
  const child = spawn(process.execPath, [fixture('mcp-everything-http.mjs'), '0', host], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, NODE_OPTIONS: '' },
  });
  const url = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d) => {
      out += d;
      if (out.includes('\n')) resolve(JSON.parse(out.slice(0, out.indexOf('\n'))).url);
    });
    child.once('exit', (code) => reject(new Error(`the MCP HTTP fixture exited with ${code}`)));
  });
  return { url, process: child };
}
