import { Type } from '@sinclair/typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { effectiveRisk, qualifiedToolName, RiskLevels } from '../../contracts/agent-run';
import { BadRequestError, ConflictError, NotFoundError } from '../../common/errors';
import { discoverTools, type McpEndpoint } from '../../common/mcp';
import { AgentStore, type McpToolRecord } from '../../common/store/agents';
import { requireRole } from '../plugins/auth';
import { errorResponses } from '../schemas';

/** Server ids become the prefix of qualified tool names (`<server>__<tool>`), so they may not contain `__`. */
const ServerId = Type.String({
  pattern: '^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){0,31}$',
  description: 'lower-case letters, digits, single dashes',
});
const Risk = Type.Union(RiskLevels.map((r) => Type.Literal(r)));
// One object rather than a union per transport, so a bad field is reported by its own name.
const Register = Type.Object(
  {
    id: ServerId,
    transport: Type.Union([Type.Literal('stdio'), Type.Literal('http')]),
    command: Type.Optional(
      Type.String({ minLength: 1, maxLength: 1024, description: 'stdio: the command the worker runs' }),
    ),
    args: Type.Optional(
      Type.Array(Type.String({ maxLength: 4096 }), { maxItems: 64, description: 'stdio: its arguments' }),
    ),
    url: Type.Optional(
      Type.String({ pattern: '^https?://', maxLength: 2048, description: 'http: the streamable HTTP endpoint' }),
    ),
    risks: Type.Optional(
      Type.Record(Type.String({ minLength: 1, maxLength: 128 }), Risk, {
        maxProperties: 1000,
        description:
          "the admin's risk level per tool (the server's own name for it); a tool not named here is a write, or destructive if the server says so: annotations never make a tool read-only",
      }),
    ),
  },
  { additionalProperties: false },
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

/** Discovery answers within this or the registration is refused. */
const DISCOVERY_TIMEOUT_MS = 30_000;

const toolView = (t: McpToolRecord) => ({
  name: qualifiedToolName(t.serverId, t.name),
  server: t.serverId,
  tool: t.name,
  description: t.description,
  inputSchema: t.inputSchema,
  annotations: t.annotations,
  adminRisk: t.adminRisk,
  risk: effectiveRisk(t.adminRisk, t.annotations),
  definitionHash: t.definitionHash,
  blocked: t.changed !== null,
  changedDefinitionHash: t.changed?.hash ?? null,
  changedDefinition: t.changed?.definition ?? null,
});

/**
 * The tenant's MCP server registry. Registration discovers the tools over the real protocol and pins each definition
 * by hash; a stdio server is a command the worker runs, so only an admin may register one.
 */
export const mcpServerRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const agents = new AgentStore(app.platform.db);

  const discover = async (endpoint: McpEndpoint) => {
    try {
      return await discoverTools(endpoint, DISCOVERY_TIMEOUT_MS);
    } catch (err) {
      throw new BadRequestError(
        `could not list the tools of the MCP server: ${(err as Error).message}`,
        endpoint.transport === 'stdio' ? 'body.command' : 'body.url',
      );
    }
  };

  app.post(
    '/',
    {
      preHandler: requireRole('admin'),
      schema: {
        tags: ['agents'],
        summary: 'Register an MCP server (stdio command or streamable HTTP URL) and discover its tools',
        body: Register,
        response: errorResponses(400, 409),
      },
    },
    async (request, reply) => {
      const tenantId = request.principal!.tenantId;
      const b = request.body;
      if (await agents.getServer(tenantId, b.id))
        throw new ConflictError(`MCP server '${b.id}' is already registered`, { field: 'body.id' });
      let endpoint: McpEndpoint;
      if (b.transport === 'stdio') {
        if (b.command === undefined) throw new BadRequestError('a stdio server needs a command', 'body.command');
        if (b.url !== undefined) throw new BadRequestError('a stdio server takes no url', 'body.url');
        endpoint = { transport: 'stdio', command: b.command, args: b.args ?? [] };
      } else {
        if (b.url === undefined) throw new BadRequestError('an http server needs a url', 'body.url');
        if (b.command !== undefined || b.args !== undefined)
          throw new BadRequestError(
            'an http server takes no command',
            b.command !== undefined ? 'body.command' : 'body.args',
          );
        endpoint = { transport: 'http', url: b.url };
      }
      const tools = await discover(endpoint);
      const names = new Set(tools.map((t) => t.name));
      for (const name of Object.keys(b.risks ?? {})) {
        if (!names.has(name)) throw new BadRequestError(`the server has no tool '${name}'`, `body.risks.${name}`);
      }
      if (!(await agents.registerServer(tenantId, b.id, endpoint, tools, b.risks)))
        throw new ConflictError(`MCP server '${b.id}' is already registered`, { field: 'body.id' });
      return reply
        .status(201)
        .send({ id: b.id, transport: b.transport, tools: (await agents.listTools(tenantId, b.id)).map(toolView) });
    },
  );

  app.get(
    '/',
    {
      preHandler: requireRole('viewer'),
      schema: { tags: ['agents'], summary: "The tenant's MCP servers", response: errorResponses() },
    },
    async (request) => ({
      servers: await agents.listServers(request.principal!.tenantId),
    }),
  );

  app.get(
    '/:id/tools',
    {
      preHandler: requireRole('viewer'),
      schema: {
        tags: ['agents'],
        summary: "A server's tools: schema, risk, pinned hash, blocked",
        params: ServerParams,
        response: errorResponses(400, 404),
      },
    },
    async (request) => {
      const tenantId = request.principal!.tenantId;
      if (!(await agents.getServer(tenantId, request.params.id)))
        throw new NotFoundError('mcp-server', request.params.id);
      return { tools: (await agents.listTools(tenantId, request.params.id)).map(toolView) };
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
        response: errorResponses(400, 404),
      },
    },
    async (request) => {
      const tenantId = request.principal!.tenantId;
      const server = await agents.getServer(tenantId, request.params.id);
      if (!server) throw new NotFoundError('mcp-server', request.params.id);
      const live = new Map((await discover(server.endpoint)).map((t) => [t.name, t]));
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
        response: errorResponses(400, 404, 409),
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
