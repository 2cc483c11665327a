/**
 * Discovery of a catalog stdio server's tools. The command is a process, so it runs where tool calls run: in the
 * worker's sandbox, never as a child of the API (which holds the platform's secrets). The API executes this small
 * workflow and awaits its answer when an operator creates a catalog entry and when a tenant refreshes a server made
 * from one. The input names the entry; its environment (which may hold credentials) never enters a history.
 */
export const MCP_DISCOVERY_WORKFLOW = 'mcpDiscovery';

export interface McpDiscoveryInput {
  catalogId: string;
  /** Whose working directory the server gets: the tenant's id, or PLATFORM_OWNER for an operator's discovery. */
  owner: string;
}

/** The owner of an operator's discovery: outside the tenant id alphabet, so no tenant is ever taken for it. */
export const PLATFORM_OWNER = '_platform';

/** Failure types of the discovery activity, both final: a retry would start the same command the same way. */
export const McpDiscoveryFailures = {
  /** No such catalog entry (deleted meanwhile). */
  entryGone: 'McpCatalogEntryGone',
  /** The server did not start in the sandbox, the sandbox cannot be set up, or the server did not list its tools. */
  unavailable: 'McpServerUnavailable',
} as const;

export const mcpDiscoveryWorkflowId = (owner: string, key: string): string => `mcp-discovery/${owner}/${key}`;
