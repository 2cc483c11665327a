import { createHash } from 'node:crypto';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { ToolAnnotations } from '../contracts/agent-run';

/** How to reach a registered MCP server: a command speaking stdio, or a streamable HTTP endpoint. */
export type McpEndpoint = { transport: 'stdio'; command: string; args: string[] } | { transport: 'http'; url: string };

export interface DiscoveredTool {
  name: string;
  description: string;
  inputSchema: Record<string, unknown>;
  annotations: ToolAnnotations;
  definitionHash: string;
}

/**
 * The pin of a tool definition: name, description, input schema and the risk hints. The JSON keeps the server's
 * own key order, so a server that reorders keys reads as changed: the safe direction (blocked until re-approved).
 */
export const definitionHash = (t: Omit<DiscoveredTool, 'definitionHash'>): string =>
  createHash('sha256')
    .update(JSON.stringify([t.name, t.description, t.inputSchema, t.annotations]))
    .digest('hex');

/** Opens a session with the server, runs `fn`, and closes it (a stdio server process ends with it). */
export async function withMcpClient<T>(
  endpoint: McpEndpoint,
  timeoutMs: number,
  fn: (client: Client) => Promise<T>,
): Promise<T> {
  const client = new Client({ name: 'llmhub', version: '1.0.0' });
  const transport =
    endpoint.transport === 'stdio'
      ? // stderr is the servers' banner and log channel; it would interleave with the worker's JSON logs.
        new StdioClientTransport({ command: endpoint.command, args: endpoint.args, stderr: 'ignore' })
      : new StreamableHTTPClientTransport(new URL(endpoint.url));
  await client.connect(transport, { timeout: timeoutMs });
  try {
    return await fn(client);
  } finally {
    await client.close();
  }
}

export async function listTools(client: Client, timeoutMs: number): Promise<DiscoveredTool[]> {
  const tools: DiscoveredTool[] = [];
  let cursor: string | undefined;
  do {
    const page = await client.listTools(cursor ? { cursor } : {}, { timeout: timeoutMs });
    for (const t of page.tools) {
      const annotations: ToolAnnotations = {
        ...(t.annotations?.readOnlyHint !== undefined ? { readOnlyHint: t.annotations.readOnlyHint } : {}),
        ...(t.annotations?.destructiveHint !== undefined ? { destructiveHint: t.annotations.destructiveHint } : {}),
      };
      const def = {
        name: t.name,
        description: t.description ?? '',
        inputSchema: t.inputSchema as Record<string, unknown>,
        annotations,
      };
      tools.push({ ...def, definitionHash: definitionHash(def) });
    }
    cursor = page.nextCursor;
  } while (cursor);
  return tools;
}

export const discoverTools = (endpoint: McpEndpoint, timeoutMs: number): Promise<DiscoveredTool[]> =>
  withMcpClient(endpoint, timeoutMs, (c) => listTools(c, timeoutMs));
