-- Stdio MCP servers are commands the worker runs, so only platform operators define them: a catalog entry holds the
-- command, its arguments, the whole environment it gets and the operator's risk level per tool; a tenant enables an
-- entry under a server id of its own. The tools are those the worker discovered in the sandbox when the entry was made.
CREATE TABLE mcp_catalog (
  id           text PRIMARY KEY,
  description  text NOT NULL DEFAULT '',
  command      text NOT NULL,
  args         text[] NOT NULL DEFAULT '{}',
  env          jsonb NOT NULL DEFAULT '{}',
  risks        jsonb NOT NULL DEFAULT '{}',
  -- false: the server runs in an empty network namespace (no platform database, no cloud metadata endpoint).
  network      boolean NOT NULL DEFAULT false,
  -- NULL while the worker is still discovering them; such an entry cannot be enabled.
  tools        jsonb,
  created_at   timestamptz NOT NULL DEFAULT now()
);

-- A stdio server a tenant admin registered before the catalog is a command of the tenant's choosing: it never runs
-- again. An operator re-creates a wanted one as a catalog entry; tools of agents that named it are refused as gone.
DELETE FROM mcp_servers WHERE transport = 'stdio';
ALTER TABLE mcp_servers DROP CONSTRAINT mcp_servers_check;
ALTER TABLE mcp_servers DROP COLUMN command, DROP COLUMN args;
-- Deleting an entry removes it from every tenant that enabled it.
ALTER TABLE mcp_servers ADD COLUMN catalog_id text REFERENCES mcp_catalog (id) ON DELETE CASCADE;
ALTER TABLE mcp_servers ADD CONSTRAINT mcp_servers_endpoint CHECK (
  (transport = 'stdio' AND catalog_id IS NOT NULL AND url IS NULL)
  OR (transport = 'http' AND url IS NOT NULL AND catalog_id IS NULL)
);
CREATE INDEX mcp_servers_catalog ON mcp_servers (catalog_id) WHERE catalog_id IS NOT NULL;

-- The operator's risk level for the tool, copied from the catalog entry when the tenant enabled it (entries do not
-- change); a tenant admin's admin_risk, where set, comes first.
ALTER TABLE mcp_tools ADD COLUMN catalog_risk text CHECK (catalog_risk IN ('read-only', 'write', 'destructive'));
