import { createHash } from 'node:crypto';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport, StreamableHTTPError } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { McpError } from '@modelcontextprotocol/sdk/types.js';
import type { ToolAnnotations } from '../contracts/agent-run';
import { egressRefusalIn, type EgressPolicy } from './egress';
import { McpSandboxError, sandboxedLaunch, type StdioServerSpec } from './mcp-sandbox';

/**
 * How to reach a registered MCP server: an operator's catalog command speaking stdio (run in the sandbox, with a
 * working directory named for `owner`, the tenant or the platform), or a tenant's streamable HTTP endpoint.
 */
export type McpEndpoint =
  ({ transport: 'stdio'; catalogId: string; owner: string } & StdioServerSpec) | { transport: 'http'; url: string };

/** What connecting needs: the egress policy HTTP servers are reached under, and the per-request timeout. */
export interface McpConnectOptions {
  egress: EgressPolicy;
  timeoutMs: number;
}

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

/** A failure to reach or speak with an MCP server, in words that carry nothing the server sent (no response bodies). */
export class McpConnectionError extends Error {}

function connectionError(err: unknown, endpoint: McpEndpoint): Error {
  const refused = egressRefusalIn(err);
  if (refused) return refused;
  if (err instanceof McpSandboxError || err instanceof McpConnectionError) return err;
  if (err instanceof StreamableHTTPError)
    return new McpConnectionError(
      `the MCP server answered with an error${(err.code ?? 0) > 0 ? ` (HTTP ${err.code})` : ''}`,
    );
  // -32000 is the SDK's own "connection closed": the server went away, it did not answer.
  if (err instanceof McpError && err.code !== -32000)
    return new McpConnectionError(`the MCP server answered with MCP error ${err.code}`);
  return new McpConnectionError(
    endpoint.transport === 'stdio'
      ? `the catalog server '${endpoint.catalogId}' did not start or did not speak MCP over stdio`
      : 'the MCP server could not be reached or did not speak MCP over streamable HTTP',
  );
}

/**
 * Opens a session with the server, runs `fn`, and closes it (a stdio server process ends with it). A stdio server only
 * ever starts inside the sandbox (common/mcp-sandbox.ts); an HTTP one is reached through the egress policy. Errors of
 * the connection itself are reworded (connectionError); what `fn` throws passes as it is.
 */
export async function withMcpClient<T>(
  endpoint: McpEndpoint,
  { egress, timeoutMs }: McpConnectOptions,
  fn: (client: Client) => Promise<T>,
): Promise<T> {
  const client = new Client({ name: 'llmhub', version: '1.0.0' });
  let remove = async () => {};
  try {
    if (endpoint.transport === 'stdio') {
      const launch = await sandboxedLaunch(endpoint, endpoint.owner);
      remove = launch.remove;
      await client.connect(
        new StdioClientTransport({
          command: launch.command,
          args: launch.args,
          cwd: launch.cwd,
          env: endpoint.env,
          // stderr is the servers' banner and log channel; it would interleave with the worker's JSON logs.
          stderr: 'ignore',
        }),
        { timeout: timeoutMs },
      );
    } else {
      await client.connect(new StreamableHTTPClientTransport(new URL(endpoint.url), { fetch: egress.fetch }), {
        timeout: timeoutMs,
      });
    }
  } catch (err) {
    await client.close().catch(() => undefined);
    await remove();
    throw connectionError(err, endpoint);
  }
  try {
    return await fn(client);
  } finally {
    await client.close();
    await remove();
  }
}

/** Runs one request of a session, rewording a failure of the connection the same way as connecting does. */
export async function mcpRequest<T>(endpoint: McpEndpoint, request: () => Promise<T>): Promise<T> {
  try {
    return await request();
  } catch (err) {
    throw connectionError(err, endpoint);
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

export const discoverTools = (endpoint: McpEndpoint, options: McpConnectOptions): Promise<DiscoveredTool[]> =>
  withMcpClient(endpoint, options, (c) => mcpRequest(endpoint, () => listTools(c, options.timeoutMs)));
