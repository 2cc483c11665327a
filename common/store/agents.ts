import type { Pool, PoolClient } from 'pg';
import type { AgentDefinition, RiskLevel, ToolAnnotations } from '../../contracts/agent-run';
import type { DiscoveredTool, McpEndpoint } from '../mcp';
import { KeyPart, keysetPage, type Keyset, type Page, type PageQuery } from './pages';
import { inTransaction } from './pool';

export interface McpServerRecord {
  id: string;
  /** The operator's catalog entry a stdio server runs; null for an HTTP server. */
  catalogId: string | null;
  endpoint: McpEndpoint;
  createdAt: string;
}

/** What a tenant may see of its server: never the catalog entry's command or environment. */
export const serverView = (s: McpServerRecord) => ({
  id: s.id,
  transport: s.endpoint.transport,
  catalog: s.catalogId,
  url: s.endpoint.transport === 'http' ? s.endpoint.url : null,
  createdAt: s.createdAt,
});

/** A tenant's server: a catalog entry it enabled (the tenant names the entry, never a command), or an HTTP URL. */
export type McpServerSource = { catalogId: string } | { url: string };

const SERVER_SELECT = `SELECT s.tenant_id, s.id, s.transport, s.catalog_id, s.url, s.created_at, c.command, c.args, c.env, c.network
  FROM mcp_servers s LEFT JOIN mcp_catalog c ON c.id = s.catalog_id`;
const serverOf = (r: Record<string, unknown>): McpServerRecord => ({
  id: r.id as string,
  catalogId: (r.catalog_id as string | null) ?? null,
  endpoint:
    r.transport === 'stdio'
      ? {
          transport: 'stdio',
          catalogId: r.catalog_id as string,
          owner: r.tenant_id as string,
          command: r.command as string,
          args: r.args as string[],
          env: r.env as Record<string, string>,
          network: r.network as boolean,
        }
      : { transport: 'http', url: r.url as string },
  createdAt: (r.created_at as Date).toISOString(),
});

export interface McpToolRecord {
  serverId: string;
  name: string;
  description: string;
  inputSchema: Record<string, unknown>;
  annotations: ToolAnnotations;
  /** The tenant admin's risk level for the tool. */
  adminRisk: RiskLevel | null;
  /** The platform operator's, from the catalog entry the server was enabled from. */
  catalogRisk: RiskLevel | null;
  definitionHash: string;
  /** The definition the server reported instead of the pinned one; while set, the tool is blocked. */
  changed: { hash: string; definition: Omit<DiscoveredTool, 'definitionHash'> } | null;
}

export const MCP_SERVER_KEYS: Keyset<McpServerRecord> = {
  list: 'mcp-servers',
  parts: [KeyPart.text],
  keyOf: (s) => [s.id],
};
export const MCP_TOOL_KEYS: Keyset<McpToolRecord> = {
  list: 'mcp-tools',
  parts: [KeyPart.text],
  keyOf: (t) => [t.name],
};

const TOOL_COLUMNS =
  'server_id, name, description, input_schema, annotations, admin_risk, catalog_risk, definition_hash, changed_hash, changed_definition';
const toolOf = (r: Record<string, unknown>): McpToolRecord => ({
  serverId: r.server_id as string,
  name: r.name as string,
  description: r.description as string,
  inputSchema: r.input_schema as Record<string, unknown>,
  annotations: r.annotations as ToolAnnotations,
  adminRisk: (r.admin_risk as RiskLevel | null) ?? null,
  catalogRisk: (r.catalog_risk as RiskLevel | null) ?? null,
  definitionHash: r.definition_hash as string,
  changed: r.changed_hash
    ? { hash: r.changed_hash as string, definition: r.changed_definition as Omit<DiscoveredTool, 'definitionHash'> }
    : null,
});

const agentOf = (r: Record<string, unknown>): AgentDefinition => ({
  id: r.id as string,
  model: r.model as string,
  systemPrompt: r.system_prompt as string,
  tools: r.tools as string[],
  stepLimit: r.step_limit as number,
  approvalTimeoutSeconds: r.approval_timeout_s as number,
});

/** MCP servers, their tools and agent definitions per tenant (0005_agents.sql). */
export class AgentStore {
  constructor(private readonly db: Pool) {}

  /**
   * Registers a server with the tools discovered on it, the tenant admin's risk levels for some of them and the
   * catalog's, in one transaction; false when the id is taken.
   */
  async registerServer(
    tenantId: string,
    id: string,
    source: McpServerSource,
    tools: DiscoveredTool[],
    risks: { admin?: Record<string, RiskLevel>; catalog?: Record<string, RiskLevel> } = {},
  ): Promise<boolean> {
    return inTransaction(this.db, async (c) => {
      const { rowCount } = await c.query(
        `INSERT INTO mcp_servers (tenant_id, id, transport, catalog_id, url) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`,
        [
          tenantId,
          id,
          'catalogId' in source ? 'stdio' : 'http',
          'catalogId' in source ? source.catalogId : null,
          'url' in source ? source.url : null,
        ],
      );
      if (rowCount === 0) return false;
      for (const t of tools)
        await this.insertTool(c, tenantId, id, t, risks.admin?.[t.name] ?? null, risks.catalog?.[t.name] ?? null);
      return true;
    });
  }

  private async insertTool(
    c: PoolClient,
    tenantId: string,
    serverId: string,
    t: DiscoveredTool,
    adminRisk: RiskLevel | null,
    catalogRisk: RiskLevel | null,
  ): Promise<void> {
    await c.query(
      `INSERT INTO mcp_tools (tenant_id, server_id, name, description, input_schema, annotations, definition_hash, admin_risk, catalog_risk) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
      [
        tenantId,
        serverId,
        t.name,
        t.description,
        JSON.stringify(t.inputSchema),
        JSON.stringify(t.annotations),
        t.definitionHash,
        adminRisk,
        catalogRisk,
      ],
    );
  }

  async getServer(tenantId: string, id: string): Promise<McpServerRecord | undefined> {
    const { rows } = await this.db.query(`${SERVER_SELECT} WHERE s.tenant_id = $1 AND s.id = $2`, [tenantId, id]);
    return rows[0] ? serverOf(rows[0]) : undefined;
  }

  async listServers(tenantId: string, q: PageQuery): Promise<Page<McpServerRecord>> {
    return keysetPage(MCP_SERVER_KEYS, q, async (after, take) => {
      const { rows } = await this.db.query(
        `${SERVER_SELECT} WHERE s.tenant_id = $1 AND ($2::text IS NULL OR s.id > $2) ORDER BY s.id LIMIT $3`,
        [tenantId, after?.[0] ?? null, take],
      );
      return rows.map(serverOf);
    });
  }

  /** A page of one server's tools by name. */
  async pageTools(tenantId: string, serverId: string, q: PageQuery): Promise<Page<McpToolRecord>> {
    return keysetPage(MCP_TOOL_KEYS, q, async (after, take) => {
      const { rows } = await this.db.query(
        `SELECT ${TOOL_COLUMNS} FROM mcp_tools WHERE tenant_id = $1 AND server_id = $2 AND ($3::text IS NULL OR name > $3)
         ORDER BY name LIMIT $4`,
        [tenantId, serverId, after?.[0] ?? null, take],
      );
      return rows.map(toolOf);
    });
  }

  async listTools(tenantId: string, serverId?: string): Promise<McpToolRecord[]> {
    const { rows } = await this.db.query(
      `SELECT ${TOOL_COLUMNS} FROM mcp_tools WHERE tenant_id = $1 AND ($2::text IS NULL OR server_id = $2) ORDER BY server_id, name`,
      [tenantId, serverId ?? null],
    );
    return rows.map(toolOf);
  }

  async getTool(tenantId: string, serverId: string, name: string): Promise<McpToolRecord | undefined> {
    const { rows } = await this.db.query(
      `SELECT ${TOOL_COLUMNS} FROM mcp_tools WHERE tenant_id = $1 AND server_id = $2 AND name = $3`,
      [tenantId, serverId, name],
    );
    return rows[0] ? toolOf(rows[0]) : undefined;
  }

  /** Blocks the tool: the server reported `reported` where `pinnedHash` was approved. Idempotent. */
  async markChanged(tenantId: string, serverId: string, pinnedHash: string, reported: DiscoveredTool): Promise<void> {
    const { definitionHash, ...definition } = reported;
    await this.db.query(
      `UPDATE mcp_tools SET changed_hash = $5, changed_definition = $6 WHERE tenant_id = $1 AND server_id = $2 AND name = $3 AND definition_hash = $4`,
      [tenantId, serverId, reported.name, pinnedHash, definitionHash, JSON.stringify(definition)],
    );
  }

  /**
   * An admin's word on a tool: its risk level, and/or re-approval of the changed definition (which then becomes the
   * pinned one). Answers the tool as it now stands, undefined when there is no such tool.
   */
  async setToolPolicy(
    tenantId: string,
    serverId: string,
    name: string,
    p: { risk?: RiskLevel; approveChange?: string },
  ): Promise<McpToolRecord | undefined> {
    const { rows } = await this.db.query(
      `UPDATE mcp_tools SET
         admin_risk = COALESCE($4, admin_risk),
         description = CASE WHEN $5::text IS NOT NULL AND changed_hash = $5 THEN changed_definition->>'description' ELSE description END,
         input_schema = CASE WHEN $5::text IS NOT NULL AND changed_hash = $5 THEN changed_definition->'inputSchema' ELSE input_schema END,
         annotations = CASE WHEN $5::text IS NOT NULL AND changed_hash = $5 THEN changed_definition->'annotations' ELSE annotations END,
         definition_hash = CASE WHEN $5::text IS NOT NULL AND changed_hash = $5 THEN changed_hash ELSE definition_hash END,
         changed_definition = CASE WHEN $5::text IS NOT NULL AND changed_hash = $5 THEN NULL ELSE changed_definition END,
         changed_hash = CASE WHEN $5::text IS NOT NULL AND changed_hash = $5 THEN NULL ELSE changed_hash END
       WHERE tenant_id = $1 AND server_id = $2 AND name = $3
       RETURNING ${TOOL_COLUMNS}`,
      [tenantId, serverId, name, p.risk ?? null, p.approveChange ?? null],
    );
    return rows[0] ? toolOf(rows[0]) : undefined;
  }

  async putAgent(tenantId: string, a: AgentDefinition): Promise<AgentDefinition> {
    const { rows } = await this.db.query(
      `INSERT INTO agents (tenant_id, id, model, system_prompt, tools, step_limit, approval_timeout_s) VALUES ($1, $2, $3, $4, $5, $6, $7)
       ON CONFLICT (tenant_id, id) DO UPDATE SET model = $3, system_prompt = $4, tools = $5, step_limit = $6, approval_timeout_s = $7, updated_at = now()
       RETURNING *`,
      [tenantId, a.id, a.model, a.systemPrompt, a.tools, a.stepLimit, a.approvalTimeoutSeconds],
    );
    return agentOf(rows[0]);
  }

  async getAgent(tenantId: string, id: string): Promise<AgentDefinition | undefined> {
    const { rows } = await this.db.query('SELECT * FROM agents WHERE tenant_id = $1 AND id = $2', [tenantId, id]);
    return rows[0] ? agentOf(rows[0]) : undefined;
  }
}
