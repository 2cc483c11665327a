import type { Pool } from 'pg';
import type { RiskLevel } from '../../contracts/agent-run';
import type { DiscoveredTool } from '../mcp';
import type { StdioServerSpec } from '../mcp-sandbox';
import { KeyPart, keysetPage, type Keyset, type Page, type PageQuery } from './pages';

/** An operator's stdio MCP server (0012_mcp_catalog.sql). `tools` is null while the worker is discovering them. */
export interface McpCatalogEntry extends StdioServerSpec {
  id: string;
  description: string;
  risks: Record<string, RiskLevel>;
  tools: DiscoveredTool[] | null;
  createdAt: string;
}

const entryOf = (r: Record<string, unknown>): McpCatalogEntry => ({
  id: r.id as string,
  description: r.description as string,
  command: r.command as string,
  args: r.args as string[],
  env: r.env as Record<string, string>,
  network: r.network as boolean,
  risks: r.risks as Record<string, RiskLevel>,
  tools: (r.tools as DiscoveredTool[] | null) ?? null,
  createdAt: (r.created_at as Date).toISOString(),
});

export const MCP_CATALOG_KEYS: Keyset<McpCatalogEntry> = {
  list: 'mcp-catalog',
  parts: [KeyPart.text],
  keyOf: (e) => [e.id],
};

/** The platform's catalog of stdio MCP servers; entries do not change once made (delete and re-create instead). */
export class McpCatalogStore {
  constructor(private readonly db: Pool) {}

  /** Reserves the id with the entry's launch and risks, tools still unknown; false when the id is taken. */
  async create(e: Omit<McpCatalogEntry, 'tools' | 'createdAt'>): Promise<boolean> {
    const { rowCount } = await this.db.query(
      `INSERT INTO mcp_catalog (id, description, command, args, env, network, risks) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING`,
      [e.id, e.description, e.command, e.args, JSON.stringify(e.env), e.network, JSON.stringify(e.risks)],
    );
    return rowCount === 1;
  }

  async setTools(id: string, tools: DiscoveredTool[]): Promise<void> {
    await this.db.query('UPDATE mcp_catalog SET tools = $2 WHERE id = $1', [id, JSON.stringify(tools)]);
  }

  async get(id: string): Promise<McpCatalogEntry | undefined> {
    const { rows } = await this.db.query('SELECT * FROM mcp_catalog WHERE id = $1', [id]);
    return rows[0] ? entryOf(rows[0]) : undefined;
  }

  async list(q: PageQuery): Promise<Page<McpCatalogEntry>> {
    return keysetPage(MCP_CATALOG_KEYS, q, async (after, take) => {
      const { rows } = await this.db.query(
        'SELECT * FROM mcp_catalog WHERE $1::text IS NULL OR id > $1 ORDER BY id LIMIT $2',
        [after?.[0] ?? null, take],
      );
      return rows.map(entryOf);
    });
  }

  /** Deletes the entry and, with it, every tenant's server made from it; the number of those, or undefined if none such. */
  async remove(id: string): Promise<number | undefined> {
    const { rows } = await this.db.query(
      `WITH gone AS (DELETE FROM mcp_catalog WHERE id = $1 RETURNING id)
       SELECT (SELECT count(*) FROM gone)::int AS deleted, (SELECT count(*) FROM mcp_servers WHERE catalog_id = $1)::int AS enabled`,
      [id],
    );
    return rows[0].deleted === 1 ? rows[0].enabled : undefined;
  }
}
