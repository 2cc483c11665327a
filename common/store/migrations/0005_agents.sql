-- Agent runtime (DESIGN.md, Operations 5): MCP servers registered per tenant, the tools they offer (pinned by the
-- hash of their definition), and agent definitions whose allowlists name those tools.
CREATE TABLE mcp_servers (
  tenant_id   text NOT NULL REFERENCES tenants (id),
  id          text NOT NULL,
  transport   text NOT NULL CHECK (transport IN ('stdio', 'http')),
  -- stdio: the command and its arguments; http: the streamable HTTP endpoint.
  command     text,
  args        text[] NOT NULL DEFAULT '{}',
  url         text,
  created_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, id),
  CHECK ((transport = 'stdio' AND command IS NOT NULL AND url IS NULL) OR (transport = 'http' AND url IS NOT NULL AND command IS NULL))
);

CREATE TABLE mcp_tools (
  tenant_id        text NOT NULL,
  server_id        text NOT NULL,
  name             text NOT NULL,
  description      text NOT NULL DEFAULT '',
  input_schema     jsonb NOT NULL,
  annotations      jsonb NOT NULL DEFAULT '{}',
  -- An admin's setting; NULL: the annotations decide (read-only only with readOnlyHint: true).
  admin_risk       text CHECK (admin_risk IN ('read-only', 'write', 'destructive')),
  definition_hash  text NOT NULL,
  -- Set when the server reported another definition than the pinned one: the tool is blocked until an admin
  -- re-approves, which pins this definition.
  changed_hash       text,
  changed_definition jsonb,
  discovered_at    timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, server_id, name),
  FOREIGN KEY (tenant_id, server_id) REFERENCES mcp_servers (tenant_id, id) ON DELETE CASCADE
);

CREATE TABLE agents (
  tenant_id             text NOT NULL REFERENCES tenants (id),
  id                    text NOT NULL,
  model                 text NOT NULL,
  system_prompt         text NOT NULL,
  -- Qualified tool names `<server>__<tool>`, each a registered tool of the tenant when the agent was saved.
  tools                 text[] NOT NULL,
  step_limit            integer NOT NULL CHECK (step_limit BETWEEN 1 AND 1000),
  approval_timeout_s    integer NOT NULL CHECK (approval_timeout_s BETWEEN 1 AND 2592000),
  created_at            timestamptz NOT NULL DEFAULT now(),
  updated_at            timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, id)
);
