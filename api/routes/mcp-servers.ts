import { MCP_SERVER_KEYS, MCP_TOOL_KEYS } from '../../common/store/agents';
import { Type } from '@sinclair/typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { effectiveRisk, qualifiedToolName, RiskLevels, type RiskLevel } from '../../contracts/agent-run';
import { ConflictError, ForbiddenError, NotFoundError } from '../../common/errors';
import { egressRefusalIn } from '../../common/egress';
import { discoverTools, type DiscoveredTool, type McpEndpoint } from '../../common/mcp';
import { AgentStore, serverView, type McpServerSource, type McpToolRecord } from '../../common/store/agents';
import { McpCatalogStore } from '../../common/store/mcp-catalog';
import { discoverInWorker } from '../mcp-discovery';
import { linkTo } from '../openapi-links';
import { requireRole } from '../plugins/auth';
import { MissingReferenceError, Nullable, StringEnum } from '../resource-schemas';
import { errorResponses, NextCursor, pageQuerystring } from '../schemas';
import { CatalogId } from './mcp-catalog';

/** Server ids become the prefix of qualified tool names (`<server>__<tool>`), so they may not contain `__`. */
const ServerId = Type.String({
  pattern: '^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){0,31}$',
  description: 'lower-case letters, digits, single dashes',
});
const Risk = Type.Union(RiskLevels.map((r) => Type.Literal(r)));
const RiskOut = StringEnum(RiskLevels);
// One object rather than a union per kind, so a bad field is reported by its own name; `anyOf` says which fields go
// together (an http server's url first, so a body with neither names body.url).
const Register = Type.Object(
  {
    id: ServerId,
    catalog: Type.Optional({
      ...CatalogId,
      description: "a platform operator's catalog entry: the stdio server it defines",
    }),
    transport: Type.Optional(Type.Union([Type.Literal('stdio'), Type.Literal('http')])),
    url: Type.Optional(
      Type.String({ pattern: '^https?://', maxLength: 2048, description: 'http: the streamable HTTP endpoint' }),
    ),
    // Accepted by the schema only to be refused by name: a tenant never supplies a command.
    command: Type.Optional(Type.Unknown({ description: 'refused: only platform operators define stdio servers' })),
    args: Type.Optional(Type.Unknown({ description: 'refused: only platform operators define stdio servers' })),
    risks: Type.Optional(
      Type.Record(Type.String({ minLength: 1, maxLength: 128 }), Risk, {
        maxProperties: 1000,
        description:
          "the admin's risk level per tool (the server's own name for it), before the catalog's; a tool no one classified is a write, or destructive if the server says so: annotations never make a tool read-only",
      }),
    ),
  },
  {
    additionalProperties: false,
    description:
      'either {id, url} (transport http) or {id, catalog} (transport stdio); a command, args, or stdio without a catalog entry is 403',
    anyOf: [
      { required: ['url'], properties: { catalog: { not: {} }, transport: { const: 'http' } } },
      { required: ['catalog'], properties: { url: { not: {} }, transport: { const: 'stdio' } } },
      // A command, or stdio without a catalog entry, is well-formed but forbidden: 403 naming the operators.
      { required: ['command'] },
      { required: ['args'] },
      { required: ['transport'], properties: { catalog: { not: {} }, transport: { const: 'stdio' } } },
    ],
  },
);
const ToolPolicy = Type.Object(
  {
    risk: Type.Optional(Risk),
    /** Re-approves the changed definition the server now reports (the `changedDefinitionHash` the tool shows). */
    approveDefinitionHash: Type.Optional(Type.String({ pattern: '^[0-9a-f]{64}$' })),
  },
  { additionalProperties: false, minProperties: 1 },
);
const ServerParams = Type.Object({ id: ServerId });
const ServerView = Type.Object({
  id: Type.String(),
  transport: Type.Union([Type.Literal('stdio'), Type.Literal('http')]),
  catalog: Nullable(Type.String()),
  url: Nullable(Type.String()),
  createdAt: Type.String(),
});
const ToolView = Type.Object({
  name: Type.String({ description: 'The qualified name `<server>__<tool>`' }),
  server: Type.String(),
  tool: Type.String(),
  description: Type.String(),
  inputSchema: Type.Unknown(),
  annotations: Type.Unknown(),
  adminRisk: Nullable(RiskOut),
  catalogRisk: Nullable(RiskOut),
  risk: RiskOut,
  riskSource: StringEnum(['tenant-admin', 'catalog', 'unclassified']),
  definitionHash: Type.String(),
  blocked: Type.Boolean(),
  changedDefinitionHash: Nullable(Type.String()),
  changedDefinition: Type.Unknown(),
});
const RegisteredServer = Type.Composite([ServerView, Type.Object({ tools: Type.Array(ToolView) })]);
const serverLinks = (id: string) => ({
  tools: linkTo('GET /v1/mcp-servers/{id}/tools', { parameters: { id } }),
  refresh: linkTo('POST /v1/mcp-servers/{id}/refresh', { parameters: { id } }),
});
const toolLink = (id: string, tool: string) => ({
  setTool: linkTo('PATCH /v1/mcp-servers/{id}/tools/{tool}', { parameters: { id, tool } }),
});

/** Discovery answers within this or the registration is refused. */
const DISCOVERY_TIMEOUT_MS = 30_000;

const toolView = (t: McpToolRecord) => ({
  name: qualifiedToolName(t.serverId, t.name),
  server: t.serverId,
  tool: t.name,
  description: t.description,
  inputSchema: t.inputSchema,
  /** What the server claims about the tool (its MCP annotations): shown, never trusted to lower the risk. */
  annotations: t.annotations,
  adminRisk: t.adminRisk,
  catalogRisk: t.catalogRisk,
  risk: effectiveRisk(t.adminRisk, t.catalogRisk, t.annotations),
  riskSource: t.adminRisk !== null ? 'tenant-admin' : t.catalogRisk !== null ? 'catalog' : 'unclassified',
  definitionHash: t.definitionHash,
  blocked: t.changed !== null,
  changedDefinitionHash: t.changed?.hash ?? null,
  changedDefinition: t.changed?.definition ?? null,
});

/**
 * The tenant's MCP server registry. Registration discovers the tools over the real protocol and pins each definition
 * by hash. A tenant names either a platform operator's catalog entry (a stdio server, discovered by the worker in its
 * sandbox) or a streamable HTTP URL (reached under the egress policy); it never supplies a command.
 */
export const mcpServerRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { db, temporal, taskQueue, mcpEgress } = app.platform;
  const agents = new AgentStore(db);
  const catalog = new McpCatalogStore(db);

  const discover = async (endpoint: McpEndpoint, field: string): Promise<DiscoveredTool[]> => {
    if (endpoint.transport === 'stdio')
      return discoverInWorker(temporal, taskQueue, { catalogId: endpoint.catalogId, owner: endpoint.owner }, field);
    try {
      return await discoverTools(endpoint, { egress: mcpEgress, timeoutMs: DISCOVERY_TIMEOUT_MS });
    } catch (err) {
      // The reworded connection error (common/mcp.ts): never what the server or another host sent. An address the
      // operators' egress policy refuses is forbidden; one where no MCP server answers names nothing to register.
      const message = `could not list the tools of the MCP server: ${(err as Error).message}`;
      if (egressRefusalIn(err)) throw new ForbiddenError(message, { field });
      throw new MissingReferenceError(message, field);
    }
  };

  app.post(
    '/',
    {
      preHandler: requireRole('admin'),
      schema: {
        tags: ['agents'],
        summary:
          "Register an MCP server for the tenant: a platform operator's catalog entry (stdio) or a streamable HTTP URL, and discover its tools",
        body: Register,
        response: { 201: RegisteredServer, ...errorResponses(400, 404, 409) },
      },
      links: {
        201: {
          ...serverLinks('$response.body#/id'),
          ...toolLink('$response.body#/id', '$response.body#/tools/0/tool'),
        },
      },
    },
    async (request, reply) => {
      const tenantId = request.principal!.tenantId;
      const b = request.body;
      if (b.command !== undefined || b.args !== undefined || (b.transport === 'stdio' && b.catalog === undefined))
        throw new ForbiddenError(
          'only platform operators define stdio MCP servers (commands); enable one of the operators\' catalog entries with {"id", "catalog"}',
        );
      if (await agents.getServer(tenantId, b.id))
        throw new ConflictError(`MCP server '${b.id}' is already registered`, { field: 'body.id' });
      let source: McpServerSource;
      let tools: DiscoveredTool[];
      let catalogRisks: Record<string, RiskLevel> = {};
      // The schema's anyOf: a catalog server has no url and is stdio; an http server has a url.
      if (b.catalog !== undefined) {
        const entry = await catalog.get(b.catalog);
        if (!entry) throw new NotFoundError('mcp-catalog-entry', b.catalog);
        if (entry.tools === null)
          throw new ConflictError(`catalog entry '${b.catalog}' is still being set up; retry shortly`, {
            field: 'body.catalog',
          });
        source = { catalogId: entry.id };
        tools = entry.tools;
        catalogRisks = entry.risks;
      } else {
        source = { url: b.url! };
        tools = await discover({ transport: 'http', url: b.url! }, 'body.url');
      }
      const names = new Set(tools.map((t) => t.name));
      for (const name of Object.keys(b.risks ?? {})) {
        if (!names.has(name)) throw new MissingReferenceError(`the server has no tool '${name}'`, `body.risks.${name}`);
      }
      if (!(await agents.registerServer(tenantId, b.id, source, tools, { admin: b.risks, catalog: catalogRisks })))
        throw new ConflictError(`MCP server '${b.id}' is already registered`, { field: 'body.id' });
      return reply.status(201).send({
        ...serverView((await agents.getServer(tenantId, b.id))!),
        tools: (await agents.listTools(tenantId, b.id)).map(toolView),
      });
    },
  );

  app.get(
    '/',
    {
      preHandler: requireRole('viewer'),
      schema: {
        tags: ['agents'],
        summary: "The tenant's MCP servers by id",
        querystring: pageQuerystring(MCP_SERVER_KEYS),
        response: {
          200: Type.Object({ servers: Type.Array(ServerView), nextCursor: NextCursor }),
          ...errorResponses(400),
        },
      },
      links: { 200: serverLinks('$response.body#/servers/0/id') },
    },
    async (request) => {
      const page = await agents.listServers(request.principal!.tenantId, request.query);
      return { servers: page.items.map(serverView), nextCursor: page.nextCursor };
    },
  );

  app.get(
    '/:id/tools',
    {
      preHandler: requireRole('viewer'),
      schema: {
        tags: ['agents'],
        summary: "A server's tools by name: schema, risk, pinned hash, blocked",
        params: ServerParams,
        querystring: pageQuerystring(MCP_TOOL_KEYS),
        response: {
          200: Type.Object({ tools: Type.Array(ToolView), nextCursor: NextCursor }),
          ...errorResponses(400, 404),
        },
      },
      links: { 200: toolLink('$request.path.id', '$response.body#/tools/0/tool') },
    },
    async (request) => {
      const tenantId = request.principal!.tenantId;
      if (!(await agents.getServer(tenantId, request.params.id)))
        throw new NotFoundError('mcp-server', request.params.id);
      const page = await agents.pageTools(tenantId, request.params.id, request.query);
      return { tools: page.items.map(toolView), nextCursor: page.nextCursor };
    },
  );

  app.post(
    '/:id/refresh',
    {
      preHandler: requireRole('admin'),
      schema: {
        tags: ['agents'],
        summary: 'Ask the server for its tools again; a changed definition blocks its tool until re-approved',
        params: ServerParams,
        response: { 200: Type.Object({ tools: Type.Array(ToolView) }), ...errorResponses(400, 404) },
      },
    },
    async (request) => {
      const tenantId = request.principal!.tenantId;
      const server = await agents.getServer(tenantId, request.params.id);
      if (!server) throw new NotFoundError('mcp-server', request.params.id);
      const live = new Map((await discover(server.endpoint, 'params.id')).map((t) => [t.name, t]));
      for (const t of await agents.listTools(tenantId, server.id)) {
        const now = live.get(t.name);
        if (now && now.definitionHash !== t.definitionHash)
          await agents.markChanged(tenantId, server.id, t.definitionHash, now);
      }
      return { tools: (await agents.listTools(tenantId, server.id)).map(toolView) };
    },
  );

  app.patch(
    '/:id/tools/:tool',
    {
      preHandler: requireRole('admin'),
      schema: {
        tags: ['agents'],
        summary: "An admin's setting for a tool: its risk level, or re-approval of a changed definition",
        params: Type.Object({ id: ServerId, tool: Type.String({ minLength: 1, maxLength: 128 }) }),
        body: ToolPolicy,
        response: { 200: ToolView, ...errorResponses(400, 404, 409) },
      },
    },
    async (request) => {
      const { id, tool } = request.params;
      const tenantId = request.principal!.tenantId;
      const current = await agents.getTool(tenantId, id, tool);
      if (!current) throw new NotFoundError('tool', qualifiedToolName(id, tool));
      const approve = request.body.approveDefinitionHash;
      if (approve !== undefined && current.changed?.hash !== approve) {
        throw new ConflictError(
          current.changed
            ? `the changed definition awaiting approval is ${current.changed.hash}, not ${approve}`
            : 'the tool has no changed definition awaiting approval',
          { field: 'body.approveDefinitionHash' },
        );
      }
      const updated = await agents.setToolPolicy(tenantId, id, tool, {
        risk: request.body.risk,
        approveChange: approve,
      });
      return toolView(updated!);
    },
  );
};
