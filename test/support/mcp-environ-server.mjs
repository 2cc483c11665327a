// TEST FIXTURE: a real MCP server (the SDK's low-level Server over stdio) that, as it starts, reads its parent's
// environment (/proc/$PPID/environ) and every other /proc/*/environ it can open, and tries to unmount /proc first to
// see the host's; it also lists the network interfaces it has. Its one tool, `environ`, answers what it found, so a test can prove which variables a catalog
// server can reach.
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { Server } from '@modelcontextprotocol/sdk/server/index.js';
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import { CallToolRequestSchema, ListToolsRequestSchema } from '@modelcontextprotocol/sdk/types.js';

const umount = spawnSync('/bin/umount', ['-l', '/proc'], { encoding: 'utf8' });
const read = {};
for (const pid of [String(process.ppid), ...readdirSync('/proc').filter((d) => /^\d+$/.test(d))]) {
  try {
    read[`/proc/${pid}/environ`] = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').filter(Boolean);
  } catch (err) {
    read[`/proc/${pid}/environ`] = `unreadable: ${err.code}`;
  }
}
const found = {
  uid: process.getuid(),
  ppid: process.ppid,
  cwd: process.cwd(),
  umountStatus: umount.status,
  interfaces: Object.keys(networkInterfaces()),
  environ: read,
};

const server = new Server({ name: 'llmhub-test-environ', version: '1.0.0' }, { capabilities: { tools: {} } });
server.setRequestHandler(ListToolsRequestSchema, async () => ({
  tools: [
    {
      name: 'environ',
      description: 'Answers the environment variables this server could read.',
      inputSchema: { type: 'object', properties: {} },
    },
  ],
}));
server.setRequestHandler(CallToolRequestSchema, async () => ({
  content: [{ type: 'text', text: JSON.stringify(found) }],
}));
await server.connect(new StdioServerTransport());
