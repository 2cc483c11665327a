import { MCP_CATALOG_KEYS } from '../../common/store/mcp-catalog';
import { Type } from '@sinclair/typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { effectiveRisk, RiskLevels } from '../../contracts/agent-run';
import { PLATFORM_OWNER } from '../../contracts/mcp-discovery';
import { ConflictError, NotFoundError } from '../../common/errors';
import { McpCatalogStore, type McpCatalogEntry } from '../../common/store/mcp-catalog';
import { discoverInWorker } from '../mcp-discovery';
import { linkTo } from '../openapi-links';
import { MissingReferenceError, NoContent, StringEnum } from '../resource-schemas';
import { errorResponses, NextCursor, pageQuerystring } from '../schemas';

/** Entry ids are what tenants name to enable one: the same alphabet as server ids. */
export const CatalogId = Type.String({
  pattern: '^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){0,62}$',
  description: 'lower-case letters, digits, single dashes',
});
const Risk = Type.Union(RiskLevels.map((r) => Type.Literal(r)));
const CreateEntry = Type.Object(
  {
    id: CatalogId,
    description: Type.Optional(Type.String({ maxLength: 2000 })),
    command: Type.String({
      pattern: '^/',
      minLength: 2,
      maxLength: 1024,
      description:
        'absolute path of the executable; it runs as uid 65534 when the worker is root, so it must be readable there',
    }),
    args: Type.Optional(Type.Array(Type.String({ maxLength: 4096 }), { maxItems: 64 })),
    env: Type.Optional(
      Type.Record(Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]{0,127}$' }), Type.String({ maxLength: 8192 }), {
        maxProperties: 64,
        description:
          'the whole environment the server gets (nothing of the worker is inherited); values are never shown again',
      }),
    ),
    network: Type.Optional(
      Type.Boolean({
        description:
          "default false: the server gets an empty network namespace; true: it reaches what the worker's network reaches",
      }),
    ),
    risks: Type.Optional(
      Type.Record(Type.String({ minLength: 1, maxLength: 128 }), Risk, {
        maxProperties: 1000,
        description:
          "the operator's risk level per tool; a tool not named here (nor by a tenant's admin) is a write, or destructive if the server says so",
      }),
    ),
  },
  { additionalProperties: false },
);
const EntryParams = Type.Object({ id: CatalogId });
const EntryView = Type.Object({
  id: Type.String(),
  description: Type.String(),
  command: Type.String(),
  args: Type.Array(Type.String()),
  envKeys: Type.Array(Type.String(), { description: 'The names of its environment; values are never shown' }),
  network: Type.Boolean(),
  risks: Type.Record(Type.String(), StringEnum(RiskLevels)),
  tools: Type.Array(
    Type.Object({
      name: Type.String(),
      description: Type.String(),
      annotations: Type.Unknown(),
      risk: StringEnum(RiskLevels),
    }),
  ),
  createdAt: Type.String(),
});
const OPERATORS_ONLY = { platform: true };
const entryLinks = (id: string) => ({
  get: linkTo('GET /v1/platform/mcp-catalog/{id}', { parameters: { id } }),
  delete: linkTo('DELETE /v1/platform/mcp-catalog/{id}', { parameters: { id } }),
});

const entryView = (e: McpCatalogEntry) => ({
  id: e.id,
  description: e.description,
  command: e.command,
  args: e.args,
  envKeys: Object.keys(e.env),
  network: e.network,
  risks: e.risks,
  tools: (e.tools ?? []).map((t) => ({
    name: t.name,
    description: t.description,
    /** The server's own claims about the tool; they never make it read-only. */
    annotations: t.annotations,
    risk: effectiveRisk(null, e.risks[t.name] ?? null, t.annotations),
  })),
  createdAt: e.createdAt,
});

/**
 * The platform's catalog of stdio MCP servers. Only operators define commands; tenants enable an entry by id. Creating
 * an entry lists its tools in the worker's sandbox, so a command that does not start or speak MCP is refused.
 */
export const mcpCatalogRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { db, temporal, taskQueue } = app.platform;
  const catalog = new McpCatalogStore(db);

  app.post(
    '/',
    {
      config: OPERATORS_ONLY,
      schema: {
        tags: ['platform'],
        summary: "Add a stdio MCP server to the catalog: command, arguments, its whole environment, tools' risk levels",
        body: CreateEntry,
        response: { 201: EntryView, ...errorResponses(400, 404, 409) },
      },
      links: { 201: entryLinks('$response.body#/id') },
    },
    async (request, reply) => {
      const b = request.body;
      const risks = b.risks ?? {};
      if (
        !(await catalog.create({
          id: b.id,
          description: b.description ?? '',
          command: b.command,
          args: b.args ?? [],
          env: b.env ?? {},
          network: b.network ?? false,
          risks,
        }))
      )
        throw new ConflictError(`MCP catalog entry '${b.id}' already exists`, { field: 'body.id' });
      try {
        const tools = await discoverInWorker(
          temporal,
          taskQueue,
          { catalogId: b.id, owner: PLATFORM_OWNER },
          'body.command',
        );
        const names = new Set(tools.map((t) => t.name));
        for (const name of Object.keys(risks))
          if (!names.has(name))
            throw new MissingReferenceError(`the server has no tool '${name}'`, `body.risks.${name}`);
        await catalog.setTools(b.id, tools);
      } catch (err) {
        await catalog.remove(b.id);
        throw err;
      }
      return reply.status(201).send(entryView((await catalog.get(b.id))!));
    },
  );

  app.get(
    '/',
    {
      config: OPERATORS_ONLY,
      schema: {
        tags: ['platform'],
        summary: 'The catalog of stdio MCP servers by id',
        querystring: pageQuerystring(MCP_CATALOG_KEYS),
        response: {
          200: Type.Object({ entries: Type.Array(EntryView), nextCursor: NextCursor }),
          ...errorResponses(400),
        },
      },
      links: { 200: entryLinks('$response.body#/entries/0/id') },
    },
    async (request) => {
      const page = await catalog.list(request.query);
      return { entries: page.items.map(entryView), nextCursor: page.nextCursor };
    },
  );

  app.get(
    '/:id',
    {
      config: OPERATORS_ONLY,
      schema: {
        tags: ['platform'],
        summary: 'One catalog entry with its tools',
        params: EntryParams,
        response: { 200: EntryView, ...errorResponses(400, 404) },
      },
    },
    async (request) => {
      const entry = await catalog.get(request.params.id);
      if (!entry) throw new NotFoundError('mcp-catalog-entry', request.params.id);
      return entryView(entry);
    },
  );

  app.delete(
    '/:id',
    {
      config: OPERATORS_ONLY,
      schema: {
        tags: ['platform'],
        summary:
          "Remove a catalog entry and every tenant's server made from it (their agents' tools are then refused as gone)",
        params: EntryParams,
        response: { 204: NoContent, ...errorResponses(400, 404) },
      },
    },
    async (request, reply) => {
      if ((await catalog.remove(request.params.id)) === undefined)
        throw new NotFoundError('mcp-catalog-entry', request.params.id);
      return reply.status(204).send(null);
    },
  );
};
