import { LIMIT_KEYS } from '../../common/store/limits';
import { PROJECT_KEYS } from '../../common/store/routing';
import { API_KEY_KEYS } from '../../common/store/tenants';
import { Type } from '@sinclair/typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { ConflictError, ForbiddenError, NotFoundError } from '../../common/errors';
import { CEILING_SUBJECT, LimitStore, type LimitRule } from '../../common/store/limits';
import { RoutingStore } from '../../common/store/routing';
import { instantOf } from '../instants';
import { linkTo } from '../openapi-links';
import { requireRole } from '../plugins/auth';
import { MissingReferenceError, NoContent } from '../resource-schemas';
import { errorResponses, NextCursor, pageQuerystring, ResourceId } from '../schemas';

// The roles of common/types.ts, as literals so the body's type is Role (createApiKey refuses any other string).
const KeyRole = Type.Union([
  Type.Literal('viewer'),
  Type.Literal('developer'),
  Type.Literal('operator'),
  Type.Literal('approver'),
  Type.Literal('admin'),
]);
const ApiKey = Type.Object({
  id: Type.String(),
  name: Type.String(),
  role: KeyRole,
  createdAt: Type.String(),
  revokedAt: Type.Union([Type.String(), Type.Null()]),
  expiresAt: Type.Union([Type.String(), Type.Null()]),
});
const CreatedApiKey = Type.Object({
  id: Type.String(),
  name: Type.String(),
  role: KeyRole,
  expiresAt: Type.Union([Type.String(), Type.Null()]),
  key: Type.String({ description: 'The whole key; shown only in this answer' }),
});
const CreateApiKey = Type.Object(
  {
    name: Type.String({ minLength: 1, maxLength: 200 }),
    role: KeyRole,
    expiresAt: Type.Optional(
      Type.String({
        format: 'date-time',
        description:
          'When the key stops working; default: never. A time already past makes a key that is refused at once',
      }),
    ),
  },
  { additionalProperties: false },
);

const Project = Type.Object({ id: Type.String(), name: Type.String(), createdAt: Type.String() });
const CreateProject = Type.Object(
  { id: ResourceId, name: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })) },
  { additionalProperties: false },
);

// The caller subjects a limit can name; the gateway's principals are `key:<id>` (api/plugins/auth.ts).
const Subject = Type.String({
  pattern: '^(?:|key:[a-z0-9]{16})$',
  description: "'' for the whole tenant, or 'key:<id>' for one of its API keys",
});
// Column bounds (integer, bigint as exact JS numbers), so an out-of-range value is a 400 and never a database error.
const Limit = Type.Object({
  subject: Type.String(),
  windowSeconds: Type.Integer(),
  maxRequests: Type.Union([Type.Integer(), Type.Null()]),
  maxTokens: Type.Union([Type.Integer(), Type.Null()]),
});
const PutLimit = Type.Object(
  {
    subject: Subject,
    windowSeconds: Type.Integer({ minimum: 1, maximum: 2_147_483_647 }),
    maxRequests: Type.Optional(Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER })),
    maxTokens: Type.Optional(Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER })),
  },
  {
    additionalProperties: false,
    // A limit without either limits nothing.
    anyOf: [{ required: ['maxRequests'] }, { required: ['maxTokens'] }],
    description: 'maxRequests and/or maxTokens',
  },
);

const limitOut = (l: LimitRule) => ({
  subject: l.subject,
  windowSeconds: l.windowSeconds,
  maxRequests: l.maxRequests,
  maxTokens: l.maxTokens,
});

/**
 * Tenant administration: API keys, projects and gateway limits. Every object is read and written
 * under the caller's tenant, so another tenant's ids answer 404 like unknown ones. The gateway replicas learn each
 * change from the store's NOTIFY triggers (0002_gateway.sql), as they do for changes made by workflows.
 */
export const adminRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { db, tenants } = app.platform;
  const routing = new RoutingStore(db);
  const limits = new LimitStore(db);

  app.post(
    '/api-keys',
    {
      preHandler: requireRole('admin'),
      schema: {
        tags: ['admin'],
        summary: 'Create an API key of the tenant; the key is shown only in this answer',
        body: CreateApiKey,
        response: { 201: CreatedApiKey, ...errorResponses(400) },
      },
      links: {
        201: { revoke: linkTo('DELETE /v1/api-keys/{id}', { parameters: { id: '$response.body#/id' } }) },
      },
    },
    async (request, reply) => {
      const { name, role } = request.body;
      // A time already past is taken as given (JSON Schema cannot say "future"): the key is refused from the start,
      // as it would be a moment later; an expiry only ever narrows what a key can do.
      const expiresAt =
        request.body.expiresAt === undefined ? null : new Date(instantOf(request.body.expiresAt, 'body.expiresAt')!);
      const { id, key } = await tenants.createApiKey(request.principal!.tenantId, name, role, expiresAt);
      return reply.status(201).send({ id, name, role, expiresAt: expiresAt?.toISOString() ?? null, key });
    },
  );

  app.get(
    '/api-keys',
    {
      preHandler: requireRole('admin'),
      schema: {
        tags: ['admin'],
        summary: "List the tenant's API keys (never their secrets), oldest first",
        querystring: pageQuerystring(API_KEY_KEYS),
        response: { 200: Type.Object({ apiKeys: Type.Array(ApiKey), nextCursor: NextCursor }), ...errorResponses(400) },
      },
      links: {
        200: { revoke: linkTo('DELETE /v1/api-keys/{id}', { parameters: { id: '$response.body#/apiKeys/0/id' } }) },
      },
    },
    async (request) => {
      const page = await tenants.listApiKeys(request.principal!.tenantId, request.query);
      return { apiKeys: page.items, nextCursor: page.nextCursor };
    },
  );

  app.delete(
    '/api-keys/:id',
    {
      preHandler: requireRole('admin'),
      schema: {
        tags: ['admin'],
        summary:
          'Revoke an API key; gateway replicas refuse it at once (within GATEWAY_KEY_CACHE_TTL_MS if a notification is lost)',
        params: Type.Object({ id: Type.String({ maxLength: 128 }) }),
        response: { 204: NoContent, ...errorResponses(400, 404) },
      },
    },
    async (request, reply) => {
      if (!(await tenants.revokeTenantApiKey(request.principal!.tenantId, request.params.id)))
        throw new NotFoundError('apiKey', request.params.id);
      return reply.status(204).send(null);
    },
  );

  app.post(
    '/projects',
    {
      preHandler: requireRole('admin'),
      schema: {
        tags: ['admin'],
        summary: 'Create a project (a valid X-Project-ID on the gateway)',
        body: CreateProject,
        response: { 201: Project, ...errorResponses(400, 409) },
      },
    },
    async (request, reply) => {
      const tenantId = request.principal!.tenantId;
      const { id, name = id } = request.body;
      if (!(await routing.createProject(tenantId, id, name)))
        throw new ConflictError(`project '${id}' already exists`, { field: 'body.id' });
      return reply.status(201).send((await routing.getProject(tenantId, id))!);
    },
  );

  app.get(
    '/projects',
    {
      preHandler: requireRole('viewer'),
      schema: {
        tags: ['admin'],
        summary: "List the tenant's projects by id",
        querystring: pageQuerystring(PROJECT_KEYS),
        response: {
          200: Type.Object({ projects: Type.Array(Project), nextCursor: NextCursor }),
          ...errorResponses(400),
        },
      },
    },
    async (request) => {
      const page = await routing.listProjects(request.principal!.tenantId, request.query);
      return { projects: page.items, nextCursor: page.nextCursor };
    },
  );

  app.put(
    '/limits',
    {
      preHandler: requireRole('admin'),
      schema: {
        tags: ['admin'],
        summary: 'Set the request and/or token limit per window of the tenant or of one of its keys',
        body: PutLimit,
        response: { 200: Limit, ...errorResponses(400, 404) },
      },
    },
    async (request) => {
      const tenantId = request.principal!.tenantId;
      const { subject, windowSeconds, maxRequests = null, maxTokens = null } = request.body;
      if (subject !== '' && !(await tenants.getApiKey(tenantId, subject.slice('key:'.length)))) {
        throw new MissingReferenceError(`subject '${subject}' is not an API key of this tenant`, 'body.subject');
      }
      const rule = { tenantId, subject, windowSeconds, maxRequests, maxTokens };
      await limits.setLimit(rule);
      return limitOut(rule);
    },
  );

  app.get(
    '/limits',
    {
      preHandler: requireRole('viewer'),
      schema: {
        tags: ['admin'],
        summary:
          "List the tenant's gateway limits by subject, with the platform's ceiling (subject 'platform') that applies beside them",
        querystring: pageQuerystring(LIMIT_KEYS),
        response: { 200: Type.Object({ limits: Type.Array(Limit), nextCursor: NextCursor }), ...errorResponses(400) },
      },
    },
    async (request) => {
      const page = await limits.listLimits(request.principal!.tenantId, request.query);
      return { limits: page.items.map(limitOut), nextCursor: page.nextCursor };
    },
  );

  app.delete(
    '/limits',
    {
      preHandler: requireRole('admin'),
      schema: {
        tags: ['admin'],
        summary: "Remove a limit (the platform's ceiling, subject 'platform', only an operator can remove)",
        querystring: Type.Object({ subject: Type.Union([Subject, Type.Literal(CEILING_SUBJECT)]) }),
        response: { 204: NoContent, ...errorResponses(400, 404) },
      },
    },
    async (request, reply) => {
      const { subject } = request.query;
      if (subject === CEILING_SUBJECT)
        throw new ForbiddenError("the tenant's ceiling is set by platform operators; a tenant cannot remove it");
      if (!(await limits.removeLimit(request.principal!.tenantId, subject))) throw new NotFoundError('limit', subject);
      return reply.status(204).send(null);
    },
  );
};
