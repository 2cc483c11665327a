import { randomUUID } from 'node:crypto';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Pool } from 'pg';
import type { Logger } from '../common/logger';
import { AuditStore } from '../common/store/audit';
import { TenantStore } from '../common/store/tenants';
import { gatewayPlugin } from './gateway/plugin';
import { loadGatewaySettings, type GatewaySettings } from './gateway/settings';
import { auditPlugin } from './plugins/audit';
import { authPlugin, type AuthOptions, type JwtSettings } from './plugins/auth';
import { errorsPlugin, frameworkErrorOptions } from './plugins/errors';
import { ErrorResponse } from './schemas';

/**
 * What both HTTP roles (api, gateway) are built from. This module and what it imports must stay free of the control
 * routes' modules (knowledge, parsing, conversion, the Temporal client): the gateway role loads only these.
 */
export interface HttpAppDeps {
  db: Pool;
  logger: Logger;
  jwt?: JwtSettings;
  bodyLimitBytes?: number;
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
}

export interface HttpApp {
  app: FastifyInstance;
  tenants: TenantStore;
  audit: AuditStore;
  gateway: GatewaySettings;
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
    // A caller's trace id becomes the request id, so one id follows a call through logs, audit and upstreams.
    genReqId: (req) => {
      const given = req.headers['x-trace-id'] ?? req.headers['x-request-id'];
      return typeof given === 'string' && /^[\w.:-]{1,128}$/.test(given) ? given : randomUUID();
    },
    ajv: { customOptions: { removeAdditional: false, coerceTypes: 'array', useDefaults: true, allErrors: false } },
    trustProxy: deps.trustedProxies?.length ? deps.trustedProxies : false,
    // Errors Fastify and Node answer themselves get the platform's shape too.
    ...frameworkErrorOptions,
  }).withTypeProvider<TypeBoxTypeProvider>();
  const tenants = new TenantStore(deps.db);
  const audit = new AuditStore(deps.db);

  app.addSchema(ErrorResponse);
  // First: it records every route's methods (405 with Allow), the documentation's routes included.
  await app.register(errorsPlugin);
  app.addHook('onSend', async (request, reply, payload) => {
    reply.header('x-trace-id', request.id);
    return payload;
  });
  await beforeAuth?.(app);

  await app.register(authPlugin, {
    tenants,
    jwt: deps.jwt ?? {},
    keyCacheTtlMs: gateway.keyCacheTtlMs,
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
  });
}
