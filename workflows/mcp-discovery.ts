import { proxyActivities } from '@temporalio/workflow';
import type { McpActivities } from '../activities/mcp';
import type { DiscoveredTool } from '../common/mcp';
import type { McpDiscoveryInput } from '../contracts/mcp-discovery';

const { discoverCatalogTools } = proxyActivities<McpActivities>({
  startToCloseTimeout: '2 minutes',
  // Its failures are final (see McpDiscoveryFailures); an API caller waits for the answer, so no retries of the rest.
  retry: { maximumAttempts: 1 },
});

/** Lists a catalog server's tools in the worker's sandbox (contracts/mcp-discovery.ts). */
export async function mcpDiscovery(input: McpDiscoveryInput): Promise<DiscoveredTool[]> {
  return discoverCatalogTools(input);
}
