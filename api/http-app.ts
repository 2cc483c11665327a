import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import AjvCompiler from '@fastify/ajv-compiler';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Pool } from 'pg';
import type { CredentialVault } from '../common/credentials';
import type { EgressPolicy } from '../common/egress';
import type { Logger } from '../common/logger';
import { ProviderStore } from '../common/store/providers';
import { AuditStore } from '../common/store/audit';
import { TenantStore } from '../common/store/tenants';
import { gatewayPlugin } from './gateway/plugin';
import { loadGatewaySettings, type GatewaySettings } from './gateway/settings';
import { auditPlugin } from './plugins/audit';
import { ServiceCredentials } from '../common/service-credential';
import { encodedBodyError } from './content-encoding';
import { ALWAYS_HEADERS } from './response-headers';
import { authPlugin, type AuthOptions, type JwtSettings } from './plugins/auth';
import { requestLoggerFactory } from './plugins/request-logger';
import { requestIdOf, tracingPlugin } from './plugins/tracing';
import { errorsPlugin, frameworkErrorOptions } from './plugins/errors';
import { ErrorResponse } from './schemas';
import { nestsTooDeep, TOO_DEEP } from './json-depth';
import { BadRequestError } from '../common/errors';

/**
 * What both HTTP roles (api, gateway) are built from. This module and what it imports must stay free of the control
 * routes' modules (knowledge, parsing, conversion, the Temporal client): the gateway role loads only these.
 */
export interface HttpAppDeps {
  db: Pool;
  logger: Logger;
  jwt?: JwtSettings;
  bodyLimitBytes?: number;
  /** API_REQUEST_TIMEOUT_MS; default REQUEST_TIMEOUT_MS. */
  requestTimeoutMs?: number;
  /** AUDIT_RETENTION_DAYS; default 365. */
  auditRetentionDays?: number;
  /**
   * Addresses or CIDRs of the proxies in front of the API (API_TRUSTED_PROXIES): only a request from one of them has
   * its source read from X-Forwarded-For, for the failed-authentication budget and the logs.
   */
  trustedProxies?: string[];
  /** The failed-authentication budget per source (API_AUTH_FAILURES_PER_MINUTE) and the key cache's bounds. */
  auth?: Pick<AuthOptions, 'failuresPerMinute' | 'keyCacheLimits'>;
  /** Inference gateway settings; what is left out takes its default. */
  gateway?: Partial<GatewaySettings>;
  /** Where budget alert webhooks may be reached (LLMHUB_WEBHOOK_EGRESS_ALLOW); default: no internal address. */
  webhookEgress?: EgressPolicy;
  /**
   * External providers: the vault of their credentials (LLMHUB_KEK_FILE) and the egress check of their base URLs
   * (LLMHUB_PROVIDER_EGRESS_ALLOW); none: providers cannot be registered and the gateway routes deployed versions only.
   */
  providers?: ProviderDeps;
}

export interface ProviderDeps {
  vault: CredentialVault;
  egress: EgressPolicy;
}

export interface HttpApp {
  app: FastifyInstance;
  tenants: TenantStore;
  audit: AuditStore;
  gateway: GatewaySettings;
}

/**
 * A raw body (`format: binary`) is not parsed: its route's handler reads it as it arrives (api/streamed-body.ts), which
 * checks its size. JSON Schema has no type for bytes, so the schema only documents it.
 */
const streamedBody = Object.assign(() => true, { errors: null });

/**
 * Query strings, path parameters and headers arrive as text and are coerced to their schemas' types (`?limit=5`); a
 * JSON body is taken as sent, so `{"name": false}` is no name and `{"gpu": null}` no count. Fastify's own Ajv compiler,
 * twice: with the app's options, and with them less the coercion for bodies.
 */
const textCoercedJsonAsSent = (() => {
  const pool = AjvCompiler();
  const factory: typeof pool = (externalSchemas, options) => {
    const text = pool(externalSchemas, options);
    const json = pool(externalSchemas, {
      ...options,
      customOptions: { ...options?.customOptions, coerceTypes: false },
    } as typeof options);
    // Fastify calls it with the route's part beside the schema (its typings name only the schema).
    return (route) => {
      const { httpPart, schema } = route as { httpPart?: string; schema?: { format?: string } };
      if (httpPart === 'body' && schema?.format === 'binary')
        return streamedBody as unknown as ReturnType<ReturnType<typeof pool>>;
      return (httpPart === 'body' ? json : text)(route);
    };
  };
  return factory;
})();

/**
 * How long a client may take to send a whole request (headers and body), Node's own default: Fastify's default turns
 * the limit off, so a client that trickles a body a byte at a time held its connection for ever. Answers stream for as
 * long as they take; only receiving the request is timed.
 */
export const REQUEST_TIMEOUT_MS = 300_000;

/** Node's limits for receiving a request: the headers within a minute (or the whole limit, if shorter). */
function receiveLimits(requestTimeout: number) {
  return {
    requestTimeout,
    http: {
      headersTimeout: Math.min(60_000, requestTimeout),
      // Node looks for overdue requests every 30 s: a shorter limit is looked at often enough to hold to a tenth of it.
      connectionsCheckingInterval: Math.min(30_000, Math.max(100, Math.floor(requestTimeout / 10))),
    },
  };
}

/**
 * The Fastify server with request ids, the platform's error shape, authentication and the audit. `beforeAuth`
 * registers what must see every route from the start (the API documentation).
 */
export async function createHttpApp(
  deps: HttpAppDeps,
  beforeAuth?: (app: FastifyInstance) => Promise<void>,
): Promise<HttpApp> {
  const gateway = loadGatewaySettings({}, deps.gateway);
  const app = Fastify({
    loggerInstance: deps.logger as FastifyBaseLogger,
    bodyLimit: deps.bodyLimitBytes ?? 1 << 20,
    ...receiveLimits(deps.requestTimeoutMs ?? REQUEST_TIMEOUT_MS),
    genReqId: requestIdOf,
    childLoggerFactory: requestLoggerFactory,
    ajv: { customOptions: { removeAdditional: false, coerceTypes: 'array', useDefaults: true, allErrors: false } },
    schemaController: { compilersFactory: { buildValidator: textCoercedJsonAsSent } },
    trustProxy: deps.trustedProxies?.length ? deps.trustedProxies : false,
    // Errors Fastify and Node answer themselves get the platform's shape too.
    ...frameworkErrorOptions,
  }).withTypeProvider<TypeBoxTypeProvider>();
  // An empty body sent as JSON is no body: OpenAI's Python client sends `content-type: application/json` with nothing
  // on its bodiless calls (batches.cancel, files.delete), which Fastify's own parser refuses with a 400. A route that
  // needs a body still says so through its schema; any other body goes to Fastify's parser as before.
  const json = app.getDefaultJsonParser(app.initialConfig.onProtoPoisoning!, app.initialConfig.onConstructorPoisoning!);
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    const encoded = encodedBodyError(request.headers);
    if (encoded) return done(encoded);
    if (body === '') return done(null, undefined);
    json(request, body as string, (err, parsed) =>
      !err && nestsTooDeep(parsed, body)
        ? done(new BadRequestError(`the body ${TOO_DEEP}`, 'body'))
        : done(err, parsed),
    );
  });
  const tenants = new TenantStore(deps.db);
  const audit = new AuditStore(deps.db);

  app.addSchema(ErrorResponse);
  // First: it records every route's methods (405 with Allow), the documentation's routes included.
  await app.register(errorsPlugin);
  await app.register(tracingPlugin);
  app.addHook('onSend', async (request, reply, payload) => {
    reply.header('x-trace-id', request.id);
    reply.headers(ALWAYS_HEADERS);
    return payload;
  });
  await beforeAuth?.(app);

  await app.register(authPlugin, {
    tenants,
    jwt: deps.jwt ?? {},
    keyCacheTtlMs: gateway.keyCacheTtlMs,
    serviceCredentials: new ServiceCredentials(deps.db),
    ...deps.auth,
  });
  await app.register(auditPlugin, { audit, flushMs: gateway.auditFlushMs, logger: deps.logger });
  return { app, tenants, audit, gateway };
}

/**
 * The inference routes and /metrics. Its change feed also evicts revoked keys and suspended tenants from the
 * authentication cache, so every HTTP role registers it.
 */
export async function registerGateway(http: HttpApp, deps: HttpAppDeps): Promise<void> {
  await http.app.register(gatewayPlugin, {
    db: deps.db,
    settings: http.gateway,
    audit: http.audit,
    auditRetentionMs: (deps.auditRetentionDays ?? 365) * 24 * 3_600_000,
    ...(deps.webhookEgress ? { webhookEgress: deps.webhookEgress } : {}),
    ...(deps.providers ? { providers: { store: new ProviderStore(deps.db), ...deps.providers } } : {}),
  });
}
