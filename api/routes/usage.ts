import { Type, type Static } from '@sinclair/typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyReply } from 'fastify';
import { NotFoundError, UnavailableError } from '../../common/errors';
import {
  BUDGET_KEYS,
  ALERT_KEYS,
  BudgetStore,
  DEFAULT_THRESHOLDS,
  webhookSecretContext,
  type Budget,
} from '../../common/store/budgets';
import { monthOf } from '../../common/store/limits';
import { PLATFORM_PRICE, PRICE_KEYS, PriceStore, type Price } from '../../common/store/prices';
import { RoutingStore } from '../../common/store/routing';
import { USAGE_GROUPS, usageReport, type UsageGroup, type UsageReportRow } from '../../common/store/usage';
import { TENANT_ID_PATTERN } from '../../contracts/operations';
import { linkTo } from '../openapi-links';
import { requireRole } from '../plugins/auth';
import { MissingReferenceError, NoContent, Nullable } from '../resource-schemas';
import { errorResponses, NextCursor, pageQuerystring } from '../schemas';
import { instantOf } from '../instants';
import { checkedOutboundUrl } from '../outbound-url';

/**
 * A date-time of the years 2000-2999: whatever its offset, an instant after 1970 with a four-digit year, which
 * PostgreSQL, the cursors (common/store/pages.ts) and the CSV all hold as they are.
 */
const Instant = (description: string) => Type.String({ format: 'date-time', pattern: '^2\\d{3}-', description });

const Currency = Type.String({ pattern: '^[A-Z]{3}$', description: 'ISO 4217 code, e.g. USD' });
/** A gateway model name, or a version (a deployed version or a provider's model) of it. */
const ModelName = Type.String({ pattern: '^[\\x21-\\x7e]{1,200}$', description: 'The model as requests name it' });
const VersionName = Type.String({
  pattern: '^[\\x21-\\x7e]{0,200}$',
  description: "A version or provider model; '' (the default) for every version without its own price",
});
const PerMillion = Type.Number({ minimum: 0, maximum: 1_000_000, description: 'Per million tokens, in currency' });

const PriceOut = Type.Object({
  scope: Type.Union([Type.Literal('platform'), Type.Literal('tenant')], {
    description: "platform: set by operators for every tenant, and it wins over the tenant's own",
  }),
  model: Type.String(),
  version: Type.String(),
  effectiveFrom: Type.String({ format: 'date-time' }),
  currency: Type.String(),
  inputPerMillion: Type.Number(),
  outputPerMillion: Type.Number(),
});
const PutPrice = Type.Object(
  {
    model: ModelName,
    version: Type.Optional(VersionName),
    effectiveFrom: Type.Optional(Instant('From when it applies (default: now), until the next one')),
    currency: Currency,
    inputPerMillion: PerMillion,
    outputPerMillion: PerMillion,
  },
  { additionalProperties: false },
);
const PriceKey = Type.Object(
  { model: ModelName, version: Type.Optional(VersionName), effectiveFrom: Instant('As the price gives it') },
  { additionalProperties: false },
);

const BudgetOut = Type.Object({
  project: Type.String({ description: "'' for the whole tenant" }),
  amount: Type.Number(),
  currency: Type.String(),
  thresholds: Type.Array(Type.Integer()),
  webhookUrl: Nullable(Type.String()),
  webhookSecretSet: Type.Boolean({ description: 'The secret itself is never shown' }),
  period: Type.String({ description: 'The current month, YYYY-MM (UTC)' }),
  spent: Type.Number({ description: 'Metered cost in currency this month' }),
  updatedAt: Type.String({ format: 'date-time' }),
});
const BudgetProject = Type.String({
  pattern: '^(?:|[a-z0-9][a-z0-9._-]{0,62})$',
  description: "'' (the default) for the whole tenant, or one of its projects ('default' included)",
});
const PutBudget = Type.Object(
  {
    project: Type.Optional(BudgetProject),
    amount: Type.Number({ minimum: 0.000001, maximum: 1_000_000_000, description: 'Per calendar month (UTC)' }),
    currency: Currency,
    thresholds: Type.Optional(
      Type.Array(Type.Integer({ minimum: 1, maximum: 1000 }), {
        minItems: 1,
        maxItems: 10,
        uniqueItems: true,
        description: `Percent of the amount at which an alert is sent (default ${DEFAULT_THRESHOLDS.join(', ')})`,
      }),
    ),
    webhookUrl: Type.Optional(
      Nullable(
        Type.String({
          pattern: '^https?://[^\\s/?#@]+(?:[/?#]\\S*)?$',
          maxLength: 2000,
          description:
            'Where alerts are posted (no credentials in it: the signature authenticates); its addresses must pass the egress check (LLMHUB_WEBHOOK_EGRESS_ALLOW)',
        }),
      ),
    ),
    webhookSecret: Type.Optional(
      Type.String({
        minLength: 16,
        maxLength: 200,
        pattern: '^[\\x21-\\x7e]+$',
        writeOnly: true,
        description: 'HMAC-SHA256 key of X-LLMHub-Signature, given with every webhookUrl; never shown',
      }),
    ),
  },
  {
    additionalProperties: false,
    // A webhook's alerts are always signed.
    // (In this order, so the refusal names the missing secret.)
    anyOf: [{ required: ['webhookSecret'] }, { properties: { webhookUrl: { type: 'null' } } }],
    description: 'webhookSecret is required with a webhookUrl',
  },
);
const AlertOut = Type.Object({
  id: Type.String({ description: "The event id: the same on every delivery attempt, the webhook's X-LLMHub-Event-Id" }),
  project: Type.String(),
  period: Type.String(),
  threshold: Type.Integer(),
  spent: Type.Number(),
  amount: Type.Number(),
  currency: Type.String(),
  createdAt: Type.String({ format: 'date-time' }),
  attempts: Type.Integer(),
  deliveredAt: Nullable(Type.String({ format: 'date-time' })),
  abandonedAt: Nullable(Type.String({ format: 'date-time' })),
  lastError: Nullable(Type.String()),
});

const groupsPattern = (groups: readonly string[]) => {
  const one = `(?:${groups.join('|')})`;
  return `^${one}(?:,${one})*$`;
};
const TENANT_GROUPS = USAGE_GROUPS.filter((g) => g !== 'tenant');
const reportParams = (groups: readonly string[]) => ({
  from: Type.Optional(Instant('Usage from (inclusive); default: the month began')),
  to: Type.Optional(Instant('Usage until (exclusive); default: now; none when it is not after from')),
  group_by: Type.Optional(
    Type.String({
      pattern: groupsPattern(groups),
      description: `Comma-separated: ${groups.join(', ')}; default: one total per currency`,
    }),
  ),
});
const TenantReportQuery = Type.Object(reportParams(TENANT_GROUPS), { additionalProperties: false });
const PlatformReportQuery = Type.Object(
  {
    ...reportParams(USAGE_GROUPS),
    tenant: Type.Optional(Type.String({ pattern: TENANT_ID_PATTERN, description: "Only this tenant's usage" })),
  },
  { additionalProperties: false },
);
const ReportRow = Type.Object({
  ...Object.fromEntries(USAGE_GROUPS.map((g) => [g, Type.Optional(Type.String())])),
  currency: Nullable(Type.String({ description: 'null: usage of a model without a price' })),
  requests: Type.Integer(),
  promptTokens: Type.Integer(),
  completionTokens: Type.Integer(),
  cost: Nullable(Type.Number({ description: 'In currency, to the micro-unit' })),
});
const Report = Type.Object({
  from: Type.String({ format: 'date-time' }),
  to: Type.String({ format: 'date-time' }),
  groupBy: Type.Array(Type.String()),
  rows: Type.Array(ReportRow),
});
const Csv = {
  description: `text/csv: a header line, then one line per row of the JSON report (columns: the groups, currency,
    requests, prompt_tokens, completion_tokens, cost; empty for null)`,
  content: { 'text/csv': { schema: Type.String() } },
};

const instant = (time: string | undefined, field: string, fallback: number): Date =>
  new Date(time === undefined ? fallback : Date.parse(instantOf(time, field)!));

/**
 * The report's span and groups from the query. Its rows are as many as the groups that have usage, whatever the span,
 * so the span is not bounded.
 */
function reportOf(q: { from?: string; to?: string; group_by?: string }) {
  const now = Date.now();
  const to = instant(q.to, 'querystring.to', now);
  const from = instant(q.from, 'querystring.from', monthOf(now).start);
  const groupBy = (q.group_by?.split(',') ?? []) as UsageGroup[];
  return { from, to, groupBy: USAGE_GROUPS.filter((g) => groupBy.includes(g)) };
}

const csvField = (v: string | number | null | undefined): string => {
  if (v === null || v === undefined) return '';
  let s = String(v);
  // A spreadsheet would run a cell that starts like a formula.
  if (/^[=+\-@\t\r]/.test(s) && typeof v === 'string') s = `'${s}`;
  return /[",\r\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
};

function sendCsv(reply: FastifyReply, groupBy: readonly UsageGroup[], rows: UsageReportRow[]) {
  const header = [...groupBy, 'currency', 'requests', 'prompt_tokens', 'completion_tokens', 'cost'];
  const lines = rows.map((r) =>
    [...groupBy.map((g) => r[g]), r.currency, r.requests, r.promptTokens, r.completionTokens, r.cost]
      .map(csvField)
      .join(','),
  );
  return reply
    .type('text/csv; charset=utf-8')
    .header('content-disposition', 'attachment; filename="usage.csv"')
    .send(`${[header.join(','), ...lines].join('\r\n')}\r\n`);
}

const priceOut = (p: Price) => ({
  scope: p.tenantId === PLATFORM_PRICE ? ('platform' as const) : ('tenant' as const),
  model: p.modelId,
  version: p.version,
  effectiveFrom: p.effectiveFrom,
  currency: p.currency,
  inputPerMillion: p.inputPerMillion,
  outputPerMillion: p.outputPerMillion,
});
const budgetOut = ({ projectId, ...b }: Budget) => ({ project: projectId, ...b });

/** The price routes of one owner: a tenant's admins for the tenant, operators for the platform (every tenant). */
function priceRoutes(
  ownerOf: (principal: { tenantId: string }) => string,
  routeConfig: { preHandler?: ReturnType<typeof requireRole>; config?: { platform: true } },
  readers: (owner: string) => string[],
  tag: string,
  /** The routes' path as the document names them. */
  path: string,
): FastifyPluginAsyncTypebox {
  return async (app) => {
    const prices = new PriceStore(app.platform.db);
    const effective = (t: string | undefined, field: string) => instant(t, field, Date.now());
    app.put(
      '/prices',
      {
        ...routeConfig,
        schema: {
          tags: [tag],
          summary:
            tag === 'platform'
              ? "Set a model's price for every tenant from a time on (it wins over tenants' own prices)"
              : "Set a model's price for this tenant from a time on (a platform price of the model wins over it)",
          body: PutPrice,
          response: { 200: PriceOut, ...errorResponses(400) },
        },
        links: {
          200: {
            list: linkTo(`GET ${path}`),
            remove: linkTo(`DELETE ${path}`, {
              parameters: {
                model: '$response.body#/model',
                version: '$response.body#/version',
                effectiveFrom: '$response.body#/effectiveFrom',
              },
            }),
          },
        },
      },
      async (request) => {
        const b = request.body;
        return priceOut(
          await prices.setPrice({
            tenantId: ownerOf(request.principal!),
            modelId: b.model,
            version: b.version ?? '',
            effectiveFrom: effective(b.effectiveFrom, 'body.effectiveFrom'),
            currency: b.currency,
            inputPerMillion: b.inputPerMillion,
            outputPerMillion: b.outputPerMillion,
          }),
        );
      },
    );
    app.get(
      '/prices',
      {
        ...(routeConfig.config ? routeConfig : { preHandler: requireRole('viewer') }),
        schema: {
          tags: [tag],
          summary:
            tag === 'platform'
              ? "The platform's prices by model, version and time"
              : "The prices that cost this tenant's usage: the platform's, then its own, by model, version and time",
          querystring: pageQuerystring(PRICE_KEYS),
          response: {
            200: Type.Object({ prices: Type.Array(PriceOut), nextCursor: NextCursor }),
            ...errorResponses(400),
          },
        },
      },
      async (request) => {
        const page = await prices.listPrices(readers(ownerOf(request.principal!)), request.query);
        return { prices: page.items.map(priceOut), nextCursor: page.nextCursor };
      },
    );
    app.delete(
      '/prices',
      {
        ...routeConfig,
        schema: {
          tags: [tag],
          summary: 'Remove one price (model, version, effectiveFrom)',
          querystring: PriceKey,
          response: { 204: NoContent, ...errorResponses(400, 404) },
        },
      },
      async (request, reply) => {
        const q = request.query;
        const at = effective(q.effectiveFrom, 'querystring.effectiveFrom');
        if (!(await prices.removePrice(ownerOf(request.principal!), q.model, q.version ?? '', at)))
          throw new NotFoundError('price', `${q.model}@${q.version ?? ''}@${q.effectiveFrom}`);
        return reply.status(204).send(null);
      },
    );
  };
}

/**
 * Usage, cost and budgets of the caller's tenant: the usage report (JSON and CSV) for viewers, prices and budgets
 * for admins to set and viewers to read. Everything is read and written under the caller's tenant.
 */
export const usageRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { db } = app.platform;
  const budgets = new BudgetStore(db);
  const routing = new RoutingStore(db);
  const viewer = requireRole('viewer');
  const admin = requireRole('admin');

  const report = (tenantId: string, q: Static<typeof TenantReportQuery>) => {
    const r = reportOf(q);
    return usageReport(db, { tenantId, ...r }).then((rows) => ({ ...r, rows }));
  };
  app.get(
    '/usage',
    {
      preHandler: viewer,
      schema: {
        tags: ['usage'],
        summary: "The tenant's metered usage and its cost, per group and currency",
        querystring: TenantReportQuery,
        response: { 200: Report, ...errorResponses(400) },
      },
    },
    async (request) => {
      const r = await report(request.principal!.tenantId, request.query);
      return { from: r.from.toISOString(), to: r.to.toISOString(), groupBy: r.groupBy, rows: r.rows };
    },
  );
  app.get(
    '/usage/export',
    {
      preHandler: viewer,
      schema: {
        tags: ['usage'],
        summary: 'The usage report as CSV',
        querystring: TenantReportQuery,
        response: { 200: Csv, ...errorResponses(400) },
      },
    },
    async (request, reply) => {
      const r = await report(request.principal!.tenantId, request.query);
      return sendCsv(reply, r.groupBy, r.rows);
    },
  );

  await app.register(
    priceRoutes(
      (p) => p.tenantId,
      { preHandler: admin },
      (owner) => [PLATFORM_PRICE, owner],
      'usage',
      '/v1/prices',
    ),
  );

  app.put(
    '/budgets',
    {
      preHandler: admin,
      schema: {
        tags: ['usage'],
        summary:
          'Set the monthly budget of the tenant or of one of its projects: alerts at thresholds, then 429 budget_exceeded',
        body: PutBudget,
        response: { 200: BudgetOut, ...errorResponses(400, 404, 503) },
      },
      links: {
        200: {
          list: linkTo('GET /v1/budgets'),
          alerts: linkTo('GET /v1/budgets/alerts'),
          remove: linkTo('DELETE /v1/budgets', { parameters: { project: '$response.body#/project' } }),
        },
      },
    },
    async (request) => {
      const tenantId = request.principal!.tenantId;
      const b = request.body;
      const project = b.project ?? '';
      if (project !== '' && project !== 'default' && !(await routing.getProject(tenantId, project)))
        throw new MissingReferenceError(`project '${project}' does not exist`, 'body.project');
      const webhookUrl =
        b.webhookUrl == null
          ? null
          : await checkedOutboundUrl(b.webhookUrl, app.platform.webhookEgress, 'body.webhookUrl');
      // The secret is sealed like a provider credential; without a key-encryption key no webhook can be kept.
      const vault = webhookUrl === null ? undefined : app.platform.providers?.vault;
      if (webhookUrl !== null && !vault)
        throw new UnavailableError(
          'budget webhooks are not enabled: the platform has no key-encryption key (LLMHUB_KEK_FILE); set the budget without webhookUrl',
        );
      const thresholds = [...(b.thresholds ?? DEFAULT_THRESHOLDS)].sort((x, y) => x - y);
      const budget = await budgets.setBudget(tenantId, project, {
        amount: b.amount,
        currency: b.currency,
        thresholds,
        webhookUrl,
        // Without a webhook there is nothing to sign; a URL the delivery cannot parse is its error to show.
        webhookSecret: vault ? await vault.seal(b.webhookSecret!, webhookSecretContext(tenantId, project)) : null,
      });
      // A budget lowered below (or set under) what is spent has reached its thresholds now, not at the next request.
      await budgets.decideAlerts([tenantId]);
      return budgetOut(budget);
    },
  );
  app.get(
    '/budgets',
    {
      preHandler: viewer,
      schema: {
        tags: ['usage'],
        summary: "The tenant's budgets by project (the whole tenant's, project '', first), with this month's spend",
        querystring: pageQuerystring(BUDGET_KEYS),
        response: {
          200: Type.Object({ budgets: Type.Array(BudgetOut), nextCursor: NextCursor }),
          ...errorResponses(400),
        },
      },
    },
    async (request) => {
      const page = await budgets.listBudgets(request.principal!.tenantId, request.query);
      return { budgets: page.items.map(budgetOut), nextCursor: page.nextCursor };
    },
  );
  app.delete(
    '/budgets',
    {
      preHandler: admin,
      schema: {
        tags: ['usage'],
        summary: 'Remove a budget (its stop ends at once on every gateway replica)',
        querystring: Type.Object({ project: Type.Optional(BudgetProject) }, { additionalProperties: false }),
        response: { 204: NoContent, ...errorResponses(400, 404) },
      },
    },
    async (request, reply) => {
      const project = request.query.project ?? '';
      if (!(await budgets.removeBudget(request.principal!.tenantId, project)))
        throw new NotFoundError('budget', project || '(tenant)');
      return reply.status(204).send(null);
    },
  );
  app.get(
    '/budgets/alerts',
    {
      preHandler: viewer,
      schema: {
        tags: ['usage'],
        summary: "The tenant's budget alerts and their delivery, oldest first",
        querystring: pageQuerystring(ALERT_KEYS),
        response: {
          200: Type.Object({ alerts: Type.Array(AlertOut), nextCursor: NextCursor }),
          ...errorResponses(400),
        },
      },
    },
    async (request) => {
      const page = await budgets.listAlerts(request.principal!.tenantId, request.query);
      return {
        alerts: page.items.map(({ projectId, tenantId: _, ...a }) => ({ project: projectId, ...a })),
        nextCursor: page.nextCursor,
      };
    },
  );
};

/** The platform operators' side: every tenant's usage, and the prices that apply to all tenants. */
export const platformUsageRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { db } = app.platform;
  const operators = { config: { platform: true as const } };
  const report = (q: Static<typeof PlatformReportQuery>) => {
    const r = reportOf(q);
    return usageReport(db, { ...(q.tenant ? { tenantId: q.tenant } : {}), ...r }).then((rows) => ({ ...r, rows }));
  };
  app.get(
    '/usage',
    {
      ...operators,
      schema: {
        tags: ['platform'],
        summary: "Every tenant's metered usage and its cost (or one tenant's), per group and currency",
        querystring: PlatformReportQuery,
        response: { 200: Report, ...errorResponses(400) },
      },
    },
    async (request) => {
      const r = await report(request.query);
      return { from: r.from.toISOString(), to: r.to.toISOString(), groupBy: r.groupBy, rows: r.rows };
    },
  );
  app.get(
    '/usage/export',
    {
      ...operators,
      schema: {
        tags: ['platform'],
        summary: 'The platform usage report as CSV',
        querystring: PlatformReportQuery,
        response: { 200: Csv, ...errorResponses(400) },
      },
    },
    async (request, reply) => {
      const r = await report(request.query);
      return sendCsv(reply, r.groupBy, r.rows);
    },
  );
  await app.register(
    priceRoutes(
      () => PLATFORM_PRICE,
      operators,
      () => [PLATFORM_PRICE],
      'platform',
      '/v1/platform/prices',
    ),
  );
};
