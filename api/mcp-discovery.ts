import { randomUUID } from 'node:crypto';
import { ApplicationFailure, WorkflowFailedError, type Client } from '@temporalio/client';
import type { DiscoveredTool } from '../common/mcp';
import {
  MCP_DISCOVERY_WORKFLOW,
  mcpDiscoveryWorkflowId,
  PLATFORM_OWNER,
  type McpDiscoveryInput,
} from '../contracts/mcp-discovery';
import { TenantIdKey } from '../contracts/search-attributes';
import { MissingReferenceError } from './resource-schemas';

/** Discovery of a catalog server answers within this or the request is refused. */
const DISCOVERY_TIMEOUT = '3 minutes';

/**
 * A catalog server's tools, listed by the worker in its sandbox (contracts/mcp-discovery.ts): the API never starts a
 * stdio server itself. A command that does not start an MCP server that lists its tools is a 404 on `field`: no server
 * is there to use.
 */
export async function discoverInWorker(
  temporal: Client,
  taskQueue: string,
  input: McpDiscoveryInput,
  field: string,
): Promise<DiscoveredTool[]> {
  try {
    return await temporal.workflow.execute<(i: McpDiscoveryInput) => Promise<DiscoveredTool[]>>(
      MCP_DISCOVERY_WORKFLOW,
      {
        args: [input],
        taskQueue,
        workflowId: mcpDiscoveryWorkflowId(input.owner, randomUUID()),
        workflowExecutionTimeout: DISCOVERY_TIMEOUT,
        typedSearchAttributes: input.owner === PLATFORM_OWNER ? [] : [{ key: TenantIdKey, value: input.owner }],
      },
    );
  } catch (err) {
    if (!(err instanceof WorkflowFailedError)) throw err;
    let cause: unknown = err.cause;
    while (cause instanceof Error && !(cause instanceof ApplicationFailure) && cause.cause) cause = cause.cause;
    throw new MissingReferenceError(
      `could not list the tools of catalog server '${input.catalogId}': ${cause instanceof Error ? cause.message : 'discovery failed'}`,
      field,
    );
  }
}
