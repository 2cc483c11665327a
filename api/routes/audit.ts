import { AUDIT_KEYS } from '../../common/store/audit';
import { once } from 'node:events';
import { Type, type Static } from '@sinclair/typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { AuditFilter } from '../../common/store/audit';
import { PAGE_LIMIT_MAX } from '../../common/store/pages';
import { TENANT_ID_PATTERN } from '../../contracts/operations';
import { instantOf } from '../instants';
import { auditedStream } from '../plugins/audit';
import { requireRole } from '../plugins/auth';
import { errorResponses, NextCursor, pageParams } from '../schemas';

const Nullable = <T extends ReturnType<typeof Type.String>>(t: T) => Type.Union([t, Type.Null()]);
const AuditRow = Type.Object({
  id: Type.String(),
  at: Type.String({ description: 'When the call was received (ISO 8601)' }),
  requestId: Type.String(),
  tenantId: Nullable(Type.String()),
  principal: Nullable(Type.String()),
  role: Nullable(Type.String()),
  method: Type.String(),
  route: Type.String({ description: 'The route pattern, e.g. /v1/knowledge/:namespace/chat' }),
  url: Type.String(),
  statusCode: Type.Integer(),
  workflowId: Nullable(Type.String()),
  ip: Nullable(Type.String()),
  durationMs: Type.Union([Type.Number(), Type.Null()]),
  bytesSent: Type.Union([Type.Integer(), Type.Null()], { description: 'Body bytes written to the client' }),
  disconnected: Type.Boolean({ description: 'The client went away before the reply ended' }),
  model: Nullable(Type.String()),
  modelVersion: Nullable(Type.String()),
  promptTokens: Type.Union([Type.Integer(), Type.Null()]),
  completionTokens: Type.Union([Type.Integer(), Type.Null()]),
  errorClass: Nullable(Type.String()),
});
const Filters = {
  from: Type.Optional(Type.String({ format: 'date-time', description: 'Rows of calls received at or after' })),
  to: Type.Optional(Type.String({ format: 'date-time', description: 'Rows of calls received before' })),
  principal: Type.Optional(Type.String({ maxLength: 300, description: 'e.g. key:<id>' })),
  route: Type.Optional(Type.String({ maxLength: 500, description: 'A route pattern, e.g. /v1/chat/completions' })),
  status: Type.Optional(Type.Integer({ minimum: 100, maximum: 599 })),
  workflowId: Type.Optional(Type.String({ maxLength: 500 })),
  requestId: Type.Optional(Type.String({ maxLength: 128 })),
};
const Paging = pageParams(AUDIT_KEYS);
const TenantFilter = {
  tenant: Type.Optional(Type.String({ pattern: TENANT_ID_PATTERN, description: "Only this tenant's rows" })),
};
const TenantQuery = Type.Object({ ...Filters, ...Paging }, { additionalProperties: false });
const TenantExportQuery = Type.Object(Filters, { additionalProperties: false });
const PlatformQuery = Type.Object({ ...Filters, ...TenantFilter, ...Paging }, { additionalProperties: false });
const PlatformExportQuery = Type.Object({ ...Filters, ...TenantFilter }, { additionalProperties: false });
const Page = Type.Object({
  data: Type.Array(AuditRow),
  nextCursor: NextCursor,
});
const Export = {
  description: 'One row per line (NDJSON), newest first',
  content: { 'application/x-ndjson': { schema: AuditRow } },
};
const UnauthenticatedQuery = Type.Object(
  {
    from: Filters.from,
    to: Filters.to,
    ip: Type.Optional(Type.String({ maxLength: 100 })),
    limit: Paging.limit,
  },
  { additionalProperties: false },
);
const Unauthenticated = Type.Object({
  data: Type.Array(Type.Object({ ip: Type.String(), minute: Type.String(), count: Type.Integer() })),
});

const filterOf = (q: Static<typeof PlatformExportQuery>, tenantId: string | undefined): AuditFilter => ({
  tenantId,
  from: instantOf(q.from, 'querystring.from'),
  to: instantOf(q.to, 'querystring.to'),
  principal: q.principal,
  route: q.route,
  statusCode: q.status,
  workflowId: q.workflowId,
  requestId: q.requestId,
});

/** Streams every row the filter selects as NDJSON, a page at a time, waiting while the client reads. */
async function exportRows(app: FastifyInstance, request: FastifyRequest, reply: FastifyReply, filter: AuditFilter) {
  const { audit } = app.platform;
  // Before the stream opens: a filter the database refuses is still a 400.
  let page = await audit.page(filter, PAGE_LIMIT_MAX);
  const out = auditedStream(app, request, reply, 'application/x-ndjson');
  const gone = once(reply.raw, 'close').then(() => 'gone');
  try {
    for (;;) {
      const text = page.data.map((r) => `${JSON.stringify(r)}\n`).join('');
      if (text && !out.write(text) && (await Promise.race([once(reply.raw, 'drain'), gone])) === 'gone') return;
      if (!page.nextCursor || reply.raw.destroyed) break;
      page = await audit.page(filter, PAGE_LIMIT_MAX, page.nextCursor);
    }
    out.end();
  } catch (err) {
    // The status line has gone: cutting the connection is how the client learns the export is incomplete.
    request.log.error({ err }, 'audit export failed mid-way');
    reply.raw.destroy();
  }
}

/** A tenant's audit log, for its admins: every call made with its keys and tokens. */
export const auditRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const admin = requireRole('admin');
  app.get(
    '/',
    {
      preHandler: admin,
      schema: {
        tags: ['audit'],
        summary: `The tenant's audit rows, newest first (at most ${PAGE_LIMIT_MAX} a page)`,
        querystring: TenantQuery,
        response: { 200: Page, ...errorResponses(400) },
      },
    },
    async (request) => {
      const { limit, cursor, ...q } = request.query;
      return app.platform.audit.page(filterOf(q, request.principal!.tenantId), limit, cursor);
    },
  );
  app.get(
    '/export',
    {
      preHandler: admin,
      schema: {
        tags: ['audit'],
        summary: 'Every audit row of the tenant the filters select, streamed as NDJSON',
        querystring: TenantExportQuery,
        response: { 200: Export, ...errorResponses(400) },
      },
    },
    (request, reply) => exportRows(app, request, reply, filterOf(request.query, request.principal!.tenantId)),
  );
};

/** The whole platform's audit log, for platform operators; `tenant` narrows it to one tenant. */
export const platformAuditRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const platform = { platform: true };
  app.get(
    '/',
    {
      config: platform,
      schema: {
        tags: ['platform'],
        summary: `Audit rows of every tenant and operator, newest first (at most ${PAGE_LIMIT_MAX} a page)`,
        querystring: PlatformQuery,
        response: { 200: Page, ...errorResponses(400) },
      },
    },
    async (request) => {
      const { limit, cursor, tenant, ...q } = request.query;
      return app.platform.audit.page(filterOf(q, tenant), limit, cursor);
    },
  );
  app.get(
    '/export',
    {
      config: platform,
      schema: {
        tags: ['platform'],
        summary: 'Every audit row the filters select, streamed as NDJSON',
        querystring: PlatformExportQuery,
        response: { 200: Export, ...errorResponses(400) },
      },
    },
    (request, reply) => exportRows(app, request, reply, filterOf(request.query, request.query.tenant)),
  );
  app.get(
    '/unauthenticated',
    {
      config: platform,
      schema: {
        tags: ['platform'],
        summary: 'Calls refused for missing or invalid credentials, counted per source address and minute',
        querystring: UnauthenticatedQuery,
        response: { 200: Unauthenticated, ...errorResponses(400) },
      },
    },
    async (request) => {
      const { limit, ip, from, to } = request.query;
      return {
        data: await app.platform.audit.unauthenticated(
          { ip, from: instantOf(from, 'querystring.from'), to: instantOf(to, 'querystring.to') },
          limit,
        ),
      };
    },
  );
};
