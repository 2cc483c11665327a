import { Type, type Static, type TSchema } from '@sinclair/typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyRequest } from 'fastify';
import { ConflictError, NotFoundError, UnavailableError } from '../../common/errors';
import {
  credentialContext,
  PROVIDER_KEYS,
  PROVIDER_KINDS,
  providerRef,
  ProviderStore,
  type Provider,
  type ProviderKind,
  type ProviderModel,
  type ProviderRoute,
} from '../../common/store/providers';
import { DEFAULT_CANARY_WEIGHT, RoutingStore } from '../../common/store/routing';
import { inTransaction } from '../../common/store/pool';
import { RolloutLockStore } from '../../common/store/rollouts';
import { RESERVED_HEADERS } from '../gateway/providers';
import { BudgetStore } from '../../common/store/budgets';
import type { ProviderDeps } from '../http-app';
import { linkTo } from '../openapi-links';
import { checkedOutboundUrl } from '../outbound-url';
import { requireRole } from '../plugins/auth';
import { MissingReferenceError, NoContent, Nullable, StringEnum } from '../resource-schemas';
import { errorResponses, NextCursor, pageQuerystring, ResourceId } from '../schemas';

export const ProviderRef = Type.String({
  pattern: '^(?:platform/)?[a-z0-9][a-z0-9._-]{0,62}$',
  description: "a provider of the tenant by id, or a platform operator's as platform/<id>",
});
/** Header names as HTTP allows them, less those the platform sets itself, in any case. */
const HEADER_NAME = `^(?!(?:${RESERVED_HEADERS.map((h) => h.replace(/[a-z]/g, (c) => `[${c}${c.toUpperCase()}]`)).join('|')})$)[A-Za-z0-9!#$%&'*+.^_\`|~-]{1,128}$`;
/** An object whose keys match `pattern`, a refused key named in the error's field (api/plugins/errors.ts). */
const keyed = <V>(pattern: string, value: TSchema, options: object) =>
  Type.Unsafe<Record<string, V>>({
    type: 'object',
    patternProperties: { [pattern]: value },
    propertyNames: { pattern },
    additionalProperties: false,
    ...options,
  });
const CreateProvider = Type.Object(
  {
    id: ResourceId,
    kind: StringEnum<ProviderKind>(PROVIDER_KINDS, {
      description:
        "openai: any OpenAI-compatible API (OpenAI, Anthropic's and others' OpenAI endpoints, vLLM, TGI), Authorization: Bearer; azure: Azure OpenAI (…/openai/deployments/{deployment}/…?api-version=, api-key header)",
    }),
    baseUrl: Type.String({
      // No user info (the credential goes in credential), no query or fragment.
      pattern: "^https?://[A-Za-z0-9._~!$&'()*+,;=:%\\[\\]-]+(?:/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*)?$",
      maxLength: 2048,
      description:
        'openai: the API base with its version path (https://api.openai.com/v1); azure: the resource (https://name.openai.azure.com). Its addresses must pass the egress check',
    }),
    apiVersion: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9._-]{1,64}$', description: "azure's api-version" })),
    credential: Type.String({
      pattern: '^[!-~]{1,8192}$',
      description: 'the API key; stored envelope-encrypted and never shown, logged or returned again',
    }),
    headers: Type.Optional(
      keyed<string>(HEADER_NAME, Type.String({ pattern: '^[ -~]{0,4096}$' }), {
        maxProperties: 32,
        description: `extra request headers (not ${RESERVED_HEADERS.join(', ')}); answers show their names only`,
      }),
    ),
    models: keyed<ProviderModel>(
      '^[a-z0-9][a-z0-9._-]{0,62}$',
      Type.Object(
        {
          model: Type.String({ pattern: '^[!-~]{1,256}$', description: "the provider's model (azure: deployment)" }),
        },
        { additionalProperties: false },
      ),
      {
        maxProperties: 1000,
        description:
          "gateway model name -> provider model; its price (x-routing-strategy: cost, usage, budgets) is the price table's for version provider:<ref>",
      },
    ),
  },
  {
    additionalProperties: false,
    if: { properties: { kind: { const: 'azure' } }, required: ['kind'] },
    then: { required: ['apiVersion'] },
    description: 'an azure provider needs its apiVersion',
  },
);
const ProviderView = Type.Object({
  id: Type.String(),
  ref: Type.String({ description: 'what a provider route names it by' }),
  scope: StringEnum(['tenant', 'platform'] as const),
  kind: StringEnum(PROVIDER_KINDS),
  baseUrl: Type.String(),
  apiVersion: Nullable(Type.String()),
  headerNames: Type.Array(Type.String()),
  models: Type.Record(Type.String(), Type.Object({ model: Type.String() })),
  createdAt: Type.String(),
});
const Params = Type.Object({ id: ResourceId });

const view = (p: Provider): Static<typeof ProviderView> => ({
  id: p.id,
  ref: providerRef(p),
  scope: p.tenantId === null ? 'platform' : 'tenant',
  kind: p.kind,
  baseUrl: p.baseUrl,
  apiVersion: p.apiVersion,
  headerNames: Object.keys(p.headers),
  models: Object.fromEntries(Object.entries(p.models).map(([k, m]) => [k, { model: m.model }])),
  createdAt: p.createdAt,
});

function configured(deps: ProviderDeps | undefined): ProviderDeps {
  if (!deps)
    throw new UnavailableError(
      'external providers are not enabled: the platform has no key-encryption key (LLMHUB_KEK_FILE)',
    );
  return deps;
}

/**
 * External providers: a tenant admin's for its tenant (/v1/providers), a platform operator's for every tenant
 * (/v1/platform/providers, which tenants route to as platform/<id>). Providers do not change once made: delete and
 * register again (a provider a route names is not deleted).
 */
export const providerRoutes: FastifyPluginAsyncTypebox<{ owner: 'tenant' | 'platform' }> = async (app, { owner }) => {
  const store = new ProviderStore(app.platform.db);
  const platform = owner === 'platform';
  const access = platform ? { config: { platform: true } } : { preHandler: requireRole('admin') };
  const tags = [platform ? 'platform' : 'providers'];
  const ownerOf = (request: FastifyRequest) => (platform ? null : request.principal!.tenantId);
  const base = platform ? '/v1/platform/providers' : '/v1/providers';
  const links = (id: string) => ({
    get: linkTo(`GET ${base}/{id}`, { parameters: { id } }),
    delete: linkTo(`DELETE ${base}/{id}`, { parameters: { id } }),
  });

  app.post(
    '/',
    {
      ...access,
      schema: {
        tags,
        summary: platform
          ? 'Register an external provider every tenant may route to (as platform/<id>)'
          : 'Register an external OpenAI-compatible provider for the tenant: base URL, credential, headers, model mapping',
        body: CreateProvider,
        response: { 201: ProviderView, ...errorResponses(400, 404, 409, 503) },
      },
      links: { 201: links('$response.body#/id') },
    },
    async (request, reply) => {
      const deps = configured(app.platform.providers);
      // The type provider reads Unsafe (keyed, StringEnum) schemas as unknown; the schema validated these types.
      const b = request.body as Static<typeof CreateProvider>;
      const headers = b.headers ?? {};
      const baseUrl = await checkedOutboundUrl(b.baseUrl, deps.egress, 'body.baseUrl');
      const tenantId = ownerOf(request);
      const credential = await deps.vault.seal(b.credential, credentialContext({ tenantId, id: b.id }));
      const made = await store.create({
        tenantId,
        id: b.id,
        kind: b.kind,
        baseUrl,
        apiVersion: b.apiVersion ?? null,
        headers,
        models: b.models,
        credential,
      });
      if (!made) throw new ConflictError(`provider '${b.id}' already exists`, { field: 'body.id' });
      return reply.status(201).send(view((await store.get(tenantId, b.id))!));
    },
  );

  app.get(
    '/',
    {
      ...access,
      schema: {
        tags,
        summary: platform
          ? "The platform's providers"
          : "The tenant's providers, then the platform's (never a credential or a header's value)",
        querystring: pageQuerystring(PROVIDER_KEYS),
        response: {
          200: Type.Object({ providers: Type.Array(ProviderView), nextCursor: NextCursor }),
          ...errorResponses(400),
        },
      },
    },
    async (request) => {
      const page = await store.list(ownerOf(request), request.query);
      return { providers: page.items.map(view), nextCursor: page.nextCursor };
    },
  );

  app.get(
    '/:id',
    {
      ...access,
      schema: {
        tags,
        summary: 'One provider (never its credential)',
        params: Params,
        response: { 200: ProviderView, ...errorResponses(400, 404) },
      },
    },
    async (request) => {
      const p = await store.get(ownerOf(request), request.params.id);
      if (!p) throw new NotFoundError('provider', request.params.id);
      return view(p);
    },
  );

  app.delete(
    '/:id',
    {
      ...access,
      schema: {
        tags,
        summary: 'Delete a provider no provider route names',
        params: Params,
        response: { 204: NoContent, ...errorResponses(400, 404, 409) },
      },
    },
    async (request, reply) => {
      const key = { tenantId: ownerOf(request), id: request.params.id };
      const users = await store.usedBy(key);
      if (users.length)
        throw new ConflictError(`provider '${key.id}' is routed to; change those routes first`, {
          models: users.map((r) => (platform ? `${r.tenantId}/${r.modelId}` : r.modelId)),
        });
      if (!(await store.remove(key.tenantId, key.id))) throw new NotFoundError('provider', key.id);
      return reply.status(204).send(null);
    },
  );
};

/** Key rotation for everything sealed under the KEK: provider credentials and budget webhook secrets (operators). */
export const providerCredentialRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const store = new ProviderStore(app.platform.db);
  const budgets = new BudgetStore(app.platform.db);
  app.post(
    '/rewrap',
    {
      config: { platform: true },
      schema: {
        tags: ['platform'],
        summary:
          "Key rotation: re-wrap the data key of every provider credential and budget webhook secret under the key file's primary key (the credentials themselves are not re-encrypted; the gateway keeps serving throughout)",
        response: {
          200: Type.Object({
            rewrapped: Type.Integer(),
            stranded: Type.Integer({
              description:
                'credentials under a key the key file no longer holds: they open nowhere; register the provider (or set the budget webhook) again',
            }),
          }),
          ...errorResponses(503),
        },
      },
    },
    async () => {
      const vault = configured(app.platform.providers).vault;
      const [a, b] = [await store.rewrapAll(vault), await budgets.rewrapSecrets(vault)];
      return { rewrapped: a.rewrapped + b.rewrapped, stranded: a.stranded + b.stranded };
    },
  );
};

const RouteParams = Type.Object({ modelId: ResourceId });
const PutRoute = Type.Object(
  {
    stable: Type.Optional(Nullable(ProviderRef)),
    canary: Type.Optional(Nullable(ProviderRef)),
    canaryWeight: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: 100,
        description: `percent of weighted traffic to the canary (default ${DEFAULT_CANARY_WEIGHT})`,
      }),
    ),
    fallbacks: Type.Optional(Type.Array(ProviderRef, { maxItems: 8, uniqueItems: true })),
  },
  {
    additionalProperties: false,
    anyOf: [
      { required: ['stable'], properties: { stable: { type: 'string' } } },
      { required: ['canary'], properties: { canary: { type: 'string' } } },
      { required: ['fallbacks'], properties: { fallbacks: { type: 'array', minItems: 1 } } },
    ],
    description: 'a stable, a canary or fallbacks',
  },
);
const RouteView = Type.Object({
  modelId: Type.String(),
  stable: Nullable(Type.String()),
  canary: Nullable(Type.String()),
  canaryWeight: Type.Integer(),
  fallbacks: Type.Array(Type.String()),
});
const routeView = (r: ProviderRoute): Static<typeof RouteView> => ({
  modelId: r.modelId,
  stable: r.stable,
  canary: r.canary,
  canaryWeight: r.canaryWeight,
  fallbacks: r.fallbacks,
});

/**
 * A gateway model's provider targets: stable and canary (weighted as deployed versions are) replace the deployed
 * route's where set, and fallbacks are tried in order when the chosen target fails before its first byte.
 */
export const providerRouteRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const store = new ProviderStore(app.platform.db);
  const routing = new RoutingStore(app.platform.db);
  const locks = new RolloutLockStore(app.platform.db);

  app.put(
    '/:modelId',
    {
      preHandler: requireRole('admin'),
      schema: {
        tags: ['providers'],
        summary: 'Route a registered model to provider models: stable, canary with its weight, fallbacks in order',
        params: RouteParams,
        body: PutRoute,
        response: { 200: RouteView, ...errorResponses(400, 404, 409) },
      },
      links: {
        200: {
          get: linkTo('GET /v1/provider-routes/{modelId}', { parameters: { modelId: '$request.path.modelId' } }),
          delete: linkTo('DELETE /v1/provider-routes/{modelId}', { parameters: { modelId: '$request.path.modelId' } }),
        },
      },
    },
    async (request) => {
      const tenantId = request.principal!.tenantId;
      const { modelId } = request.params;
      const b = request.body;
      if (!(await app.platform.registry.getModel(tenantId, modelId))) throw new NotFoundError('model', modelId);
      const stable = b.stable ?? null;
      const canary = b.canary ?? null;
      const fallbacks = b.fallbacks ?? [];
      if (canary && canary === stable) throw new ConflictError('the canary is the stable', { field: 'body.canary' });
      const refs: [string, string][] = [
        ...(stable ? [[stable, 'body.stable'] as [string, string]] : []),
        ...(canary ? [[canary, 'body.canary'] as [string, string]] : []),
        ...fallbacks.map((f, i) => [f, `body.fallbacks.${i}`] as [string, string]),
      ];
      for (const [ref, field] of refs) {
        const p = await store.resolve(tenantId, ref);
        if (!p) throw new MissingReferenceError(`provider '${ref}' not found`, field);
        if (!p.models[modelId]) throw new MissingReferenceError(`provider '${ref}' maps no model '${modelId}'`, field);
      }
      if (!stable && !(await routing.getRoute(tenantId, modelId)))
        throw new ConflictError(`model '${modelId}' has no deployed route, so its provider route needs a stable`, {
          field: 'body.stable',
        });
      const route: ProviderRoute = {
        tenantId,
        modelId,
        stable,
        canary,
        canaryWeight: canary ? (b.canaryWeight ?? DEFAULT_CANARY_WEIGHT) : 0,
        fallbacks,
      };
      await inTransaction(app.platform.db, async (c) => {
        // A provider canary's rollout sets the canary, its weight and (promoted) the stable: the route is its until it ends.
        await locks.refuseWhileHeld(c, tenantId, modelId);
        await store.setRoute(route, c);
      });
      return routeView(route);
    },
  );

  app.get(
    '/:modelId',
    {
      preHandler: requireRole('admin'),
      schema: {
        tags: ['providers'],
        summary: "A gateway model's provider route",
        params: RouteParams,
        response: { 200: RouteView, ...errorResponses(400, 404) },
      },
    },
    async (request) => {
      const r = await store.getRoute(request.principal!.tenantId, request.params.modelId);
      if (!r) throw new NotFoundError('provider-route', request.params.modelId);
      return routeView(r);
    },
  );

  app.delete(
    '/:modelId',
    {
      preHandler: requireRole('admin'),
      schema: {
        tags: ['providers'],
        summary: 'Remove the provider route: the model is served by its deployed route alone, if it has one',
        params: RouteParams,
        response: { 204: NoContent, ...errorResponses(400, 404, 409) },
      },
    },
    async (request, reply) => {
      const tenantId = request.principal!.tenantId;
      const { modelId } = request.params;
      const removed = await inTransaction(app.platform.db, async (c) => {
        await locks.refuseWhileHeld(c, tenantId, modelId);
        return store.removeRoute(tenantId, modelId, c);
      });
      if (!removed) throw new NotFoundError('provider-route', modelId);
      return reply.status(204).send(null);
    },
  );
};
