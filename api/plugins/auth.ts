import type { FastifyInstance, FastifyReply, FastifyRequest, FastifySchema, RouteOptions } from 'fastify';
import fp from 'fastify-plugin';
import { createRemoteJWKSet, jwtVerify, type JWTVerifyGetKey } from 'jose';
import { ForbiddenError, PlatformError, UnauthorizedError } from '../../common/errors';
import { FailureBudget, sourceOf } from './auth-budget';
import { ApiKeyCache, LookupCache, setBounded, type ApiKeyCacheLimits } from './key-cache';
import { PLATFORM_KEY_PREFIX } from '../../common/store/tenants';
import { Roles, type Role } from '../../contracts/approvals';
import { isValidTenantId } from '../../contracts/operations';
import { isStorableText } from '../../common/storable-text';
import type { ApiKeyInfo, ApiKeyRecord, TenantState, TenantStore } from '../../common/store/tenants';
import {
  SERVICE_CREDENTIAL_PREFIX,
  type ServiceClaims,
  type ServiceCredentials,
} from '../../common/service-credential';
import type { PlatformOperator, Principal } from '../../common/types';

declare module 'fastify' {
  interface FastifyInstance {
    /** Verified API keys, cached; the gateway evicts a key when its revocation is announced. */
    apiKeys: ApiKeyCache;
    /** Tenants' states as JWTs are checked against them; cleared when a tenant is suspended, resumed or deleted. */
    tenantStates: LookupCache<TenantState>;
  }
  interface FastifyRequest {
    /** A tenant's member; unset for platform operators. */
    principal?: Principal;
    /** A platform operator; set only on `/v1/platform/*` routes. */
    operator?: PlatformOperator;
  }
  interface FastifyContextConfig {
    /** Routes that answer without credentials (health, the OpenAPI document, docs). */
    public?: boolean;
    /** Routes for platform operators only; every other route is for tenants' members only. */
    platform?: boolean;
    /** Routes a batch's service credential may call (the gateway's inference routes); no other route takes one. */
    serviceCredential?: boolean;
  }
}

export interface JwtSettings {
  jwksUrl?: string;
  /** For tests and air-gapped installs: a key set object instead of a URL. */
  jwks?: JWTVerifyGetKey;
  issuer?: string;
  audience?: string;
  /**
   * The boolean claim that makes a token a platform operator's (it must then carry no tenant_id). Named by the
   * install, so a tenant-facing identity provider that lets users edit `roles` cannot mint an operator.
   */
  platformAdminClaim?: string;
}

/**
 * Signature algorithms a token may use: asymmetric ones only, so a token signed with a public key as an HMAC secret,
 * or not signed at all (`none`), never verifies.
 */
export const JWT_ALGORITHMS = [
  'RS256',
  'RS384',
  'RS512',
  'PS256',
  'PS384',
  'PS512',
  'ES256',
  'ES384',
  'ES512',
  'EdDSA',
];

// OpenID Connect's bound on `sub` (Core 1.0, section 2), which identity providers keep to.
const MAX_SUBJECT_LENGTH = 255;

const LOOPBACK = /^(localhost|127(\.\d{1,3}){3}|\[::1\])$/;

/**
 * Refuses a JWT set-up that would accept tokens minted for someone else: with a key set, the issuer and the audience
 * are required, and keys are fetched over https (plain http only from this machine, for a dev identity provider).
 */
export function checkJwtSettings(s: JwtSettings): void {
  if (!s.jwks && !s.jwksUrl) return;
  if (!s.issuer) throw new Error('JWT_ISSUER is required when JWT_JWKS_URL is set: tokens of any issuer would pass');
  if (!s.audience)
    throw new Error('JWT_AUDIENCE is required when JWT_JWKS_URL is set: tokens minted for other services would pass');
  if (s.jwksUrl) {
    const url = new URL(s.jwksUrl);
    if (url.protocol !== 'https:' && !(url.protocol === 'http:' && LOOPBACK.test(url.hostname))) {
      throw new Error(`JWT_JWKS_URL must use https (plain http only on loopback): ${url.origin}`);
    }
  }
}

/**
 * The platform operator's one role: what `/openapi.json` names for `/v1/platform/*` and what operators' calls are
 * audited under (platform keys and operator tokens carry no tenant role).
 */
export const PLATFORM_ADMIN = 'platform-admin';

/** A revoked or expired key is refused; the expiry is checked at every request, whatever the cache holds. */
function refuseEnded(key: { revoked: boolean; expiresAt: number | null }): void {
  if (key.revoked) throw new UnauthorizedError('API key has been revoked');
  if (key.expiresAt !== null && key.expiresAt <= Date.now()) throw new UnauthorizedError('API key has expired');
}

const keyIdOf = (claims: ServiceClaims) => /^key:(.+)$/.exec(claims.subject)?.[1];

/**
 * A batch's service credential acts as the batch's creator while the creator may still act: a `key:<id>` subject
 * (`key`: its key's record, undefined when gone) whose key was revoked or has expired since, or a tenant that is not
 * active, is refused as the key itself would be.
 */
function servicePrincipal(claims: ServiceClaims, state: string, key: ApiKeyInfo | undefined): Principal {
  if (state !== 'active') throw new UnauthorizedError(`tenant '${claims.tenantId}' cannot act (${state})`);
  let roles = claims.roles.filter((r): r is Role => (Roles as readonly unknown[]).includes(r));
  const keyId = keyIdOf(claims);
  if (keyId) {
    if (!key) throw new UnauthorizedError('the batch creator’s API key is gone');
    refuseEnded({ revoked: key.revokedAt !== null, expiresAt: key.expiresAt ? Date.parse(key.expiresAt) : null });
    roles = [key.role];
  }
  return {
    tenantId: claims.tenantId,
    subject: claims.subject,
    roles,
    via: keyId ? 'api_key' : 'jwt',
    batchId: claims.batchId,
  };
}

/** The tenant member a verified API key acts as; refused if the key has ended or its tenant is suspended. */
function principalOfKey(key: ApiKeyRecord): Principal {
  refuseEnded(key);
  if (key.tenantSuspended) throw new UnauthorizedError(`tenant '${key.tenantId}' is suspended`);
  return { tenantId: key.tenantId, subject: `key:${key.id}`, roles: [key.role], via: 'api_key' };
}

/** Failed authentications a source may have per minute before its unrecognised credentials are refused unread. */
const DEFAULT_AUTH_FAILURES_PER_MINUTE = 60;

export class TooManyAuthFailuresError extends PlatformError {
  constructor(readonly retryAfterSeconds: number) {
    super(
      429,
      'rate_limited',
      `too many failed authentications from this address; credentials this API does not know are refused for ${retryAfterSeconds} s`,
      { retryAfterSeconds },
    );
  }
}

/** Operator keys and tokens remembered as having authenticated (keys' tokens are remembered by the ApiKeyCache). */
const MAX_VOUCHED = 10_000;

/** How long a tenant's existence is trusted; a deleted tenant's tokens stop working within it. */
const TENANT_CACHE_TTL_MS = 30_000;

/** Roles that carry another's rights: an admin can do what an operator can, and so on down. */
const IMPLIES: Record<Role, Role[]> = {
  viewer: [],
  developer: ['viewer'],
  operator: ['developer', 'viewer'],
  approver: ['viewer'],
  admin: ['operator', 'developer', 'approver', 'viewer'],
};

/** Health, the OpenAPI document and Swagger UI (whose routes its plugin owns) need no credentials. */
export const isPublic = (request: FastifyRequest): boolean =>
  request.routeOptions.config?.public === true || request.url === '/docs' || request.url.startsWith('/docs/');

export const hasRole = (p: Principal, role: Role): boolean =>
  p.roles.some((r) => r === role || IMPLIES[r].includes(role));

/** The OpenAPI extension that names what an operation needs: a tenant role, or a platform operator. */
export const ROLE_EXTENSION = 'x-llmhub-role';

const REQUIRED_ROLE = Symbol('requiredRole');

/** A preHandler that refuses callers without `role`; it carries the role, which the OpenAPI document publishes. */
export function requireRole(role: Role) {
  // Callback-style, not async: it runs on every inference request, and an async hook costs a promise per call.
  const check = (request: FastifyRequest, _reply: FastifyReply, done: (err?: Error) => void) => {
    const p = request.principal;
    if (!p) return done(new UnauthorizedError());
    if (!hasRole(p, role))
      return done(new ForbiddenError(`this action needs the '${role}' role; the caller has ${p.roles.join(', ')}`));
    done();
  };
  return Object.assign(check, { [REQUIRED_ROLE]: role });
}

/**
 * What a route needs, read from what enforces it: `platform: true` or a requireRole preHandler. Undefined for
 * public routes and for a route that checks no role, which then has no extension (the authorization test fails on it).
 */
function requiredOf(route: RouteOptions): Role | typeof PLATFORM_ADMIN | undefined {
  if (route.config?.public) return undefined;
  if (route.config?.platform) return PLATFORM_ADMIN;
  const handlers = [route.preHandler ?? []].flat() as Array<{ [REQUIRED_ROLE]?: Role }>;
  const roles = handlers.flatMap((h) => h[REQUIRED_ROLE] ?? []);
  // Two role checks on one route would both have to pass: the document could name only one of them.
  if (roles.length > 1) throw new Error(`${route.method} ${route.url}: more than one requireRole`);
  return roles[0];
}

export interface AuthOptions {
  tenants: TenantStore;
  jwt: JwtSettings;
  keyCacheTtlMs?: number;
  keyCacheLimits?: ApiKeyCacheLimits;
  /** Per source address (request.ip: X-Forwarded-For only from Fastify's trusted proxies); default 60. */
  failuresPerMinute?: number;
  /** Verifies batch workflows' service credentials; unset: none is accepted. */
  serviceCredentials?: ServiceCredentials;
}

/**
 * Resolves `Authorization: Bearer` to a tenant-scoped principal: platform API keys (`llmhub_...`) from the store,
 * anything else as a JWT verified against the configured JWKS (claims `tenant_id` and `roles`).
 * A request that names another tenant in `X-Tenant-ID` is refused.
 */
export const authPlugin = fp(
  async (app: FastifyInstance, opts: AuthOptions) => {
    const keys = new ApiKeyCache(opts.tenants, opts.keyCacheTtlMs ?? 0, opts.keyCacheLimits);
    const budget = new FailureBudget(opts.failuresPerMinute ?? DEFAULT_AUTH_FAILURES_PER_MINUTE);
    const vouched = new Map<string, true>();
    const serviceClaims = new Map<string, ServiceClaims>();
    app.decorate('apiKeys', keys);
    checkJwtSettings(opts.jwt);
    const jwks = opts.jwt.jwks ?? (opts.jwt.jwksUrl ? createRemoteJWKSet(new URL(opts.jwt.jwksUrl)) : undefined);
    const tenantStates = new LookupCache((id) => opts.tenants.tenantState(id), TENANT_CACHE_TTL_MS, 10_000);
    app.decorate('tenantStates', tenantStates);

    const keyStates = new LookupCache(
      (tenantAndKey) => {
        const [tenantId, id] = tenantAndKey.split('\0') as [string, string];
        return opts.tenants.getApiKey(tenantId, id);
      },
      TENANT_CACHE_TTL_MS,
      10_000,
    );

    /** A batch's service credential's principal (servicePrincipal), its claims verified once per credential. */
    async function fromServiceCredential(token: string): Promise<Principal> {
      // A page's lines share one credential: its signature is checked once, its expiry at every call.
      const known = serviceClaims.get(token);
      const claims = known && known.exp > Date.now() ? known : await opts.serviceCredentials?.verify(token);
      if (!claims) {
        serviceClaims.delete(token);
        throw new UnauthorizedError('invalid or expired service credential');
      }
      if (!known) setBounded(serviceClaims, token, claims, MAX_VOUCHED);
      const keyId = keyIdOf(claims);
      return servicePrincipal(
        claims,
        await tenantStates.get(claims.tenantId),
        keyId ? await keyStates.get(`${claims.tenantId}\0${keyId}`) : undefined,
      );
    }

    /**
     * The same principal without a promise when the credential's claims, its tenant's state and its creator's key are
     * all in memory and let it act (each batch line is such a call); undefined for anything else, which
     * fromServiceCredential then looks up or refuses.
     */
    function serviceCredentialInMemory(token: string): Principal | undefined {
      const claims = serviceClaims.get(token);
      if (!claims || claims.exp <= Date.now()) return undefined;
      const state = tenantStates.peek(claims.tenantId);
      const keyId = keyIdOf(claims);
      const key = keyId ? keyStates.peek(`${claims.tenantId}\0${keyId}`) : { value: undefined };
      if (!state || !key) return undefined;
      try {
        return servicePrincipal(claims, state.value, key.value);
      } catch {
        return undefined;
      }
    }

    async function fromJwt(token: string): Promise<Principal | PlatformOperator> {
      if (!jwks) throw new UnauthorizedError('bearer token is not a valid API key and JWT auth is not configured');
      let payload;
      try {
        ({ payload } = await jwtVerify(token, jwks, {
          issuer: opts.jwt.issuer,
          audience: opts.jwt.audience,
          algorithms: JWT_ALGORITHMS,
          requiredClaims: ['exp'],
        }));
      } catch (err) {
        throw new UnauthorizedError(`invalid token: ${(err as Error).message}`);
      }
      // The subject names the caller in audit and usage rows: a value PostgreSQL cannot hold would stop a replica's
      // batched writes, and a non-string would be stored as "[object Object]".
      const sub = payload.sub;
      if (sub !== undefined && (typeof sub !== 'string' || sub.length > MAX_SUBJECT_LENGTH || !isStorableText(sub)))
        throw new UnauthorizedError(
          `invalid token: sub must be a string of at most ${MAX_SUBJECT_LENGTH} characters, without NUL or unpaired surrogates`,
        );
      const tenantId = payload.tenant_id;
      if (opts.jwt.platformAdminClaim && payload[opts.jwt.platformAdminClaim] === true) {
        if (tenantId !== undefined)
          throw new UnauthorizedError('a platform operator token must not name a tenant (tenant_id)');
        return { subject: `jwt:${sub ?? 'operator'}`, via: 'jwt' };
      }
      const roles = Array.isArray(payload.roles)
        ? payload.roles.filter((r): r is Role => (Roles as readonly unknown[]).includes(r))
        : [];
      if (typeof tenantId !== 'string' || !tenantId) throw new UnauthorizedError('token has no tenant_id claim');
      // Checked before any lookup: a tenant id becomes part of workflow ids and object keys.
      const state = isValidTenantId(tenantId) ? await tenantStates.get(tenantId) : 'absent';
      if (state === 'absent') throw new UnauthorizedError('token names no tenant of this platform');
      if (state === 'suspended') throw new UnauthorizedError(`tenant '${tenantId}' is suspended`);
      if (roles.length === 0) throw new ForbiddenError('token carries no platform role');
      return { tenantId, subject: sub ?? 'jwt', roles, via: 'jwt' };
    }

    // Every route registered after this plugin publishes the role it enforces, so the document cannot drift from it,
    // and one that says neither who may call it nor that it is public stops the API at start: it would admit any key.
    app.addHook('onRoute', (route) => {
      const required = requiredOf(route);
      if (required) route.schema = { ...route.schema, [ROLE_EXTENSION]: required } as FastifySchema;
      // Documented as needing no credentials (the document's default asks for the bearer scheme).
      else if (route.config?.public) route.schema = { ...route.schema, security: [] } as FastifySchema;
      else throw new Error(`${String(route.method)} ${route.url}: no requireRole, platform: true or public: true`);
    });

    /**
     * Verifies a credential this replica does not recognise only within its source's budget of failed
     * authentications, so made-up credentials cost each source a bounded number of lookups, and a source past its
     * budget is refused before any. A recognised credential (one that has verified here) is never held to it.
     */
    async function withinBudget<T>(
      request: FastifyRequest,
      reply: FastifyReply,
      recognised: boolean,
      verify: () => Promise<T>,
    ): Promise<T> {
      if (recognised) return verify();
      const source = sourceOf(request.ip);
      const taken = budget.take(source);
      if (!taken.ok) {
        reply.header('retry-after', String(taken.retryAfterSeconds));
        throw new TooManyAuthFailuresError(taken.retryAfterSeconds);
      }
      try {
        const verified = await verify();
        budget.refund(source);
        return verified;
      } catch (err) {
        if (!(err instanceof UnauthorizedError)) budget.refund(source);
        throw err;
      }
    }

    /** Operator keys and tokens: remembered while they verify, forgotten at their first refusal. */
    async function vouchedFor<T>(token: string, verify: () => Promise<T>): Promise<T> {
      try {
        const verified = await verify();
        setBounded(vouched, token, true, MAX_VOUCHED);
        return verified;
      } catch (err) {
        if (err instanceof UnauthorizedError) vouched.delete(token);
        throw err;
      }
    }

    app.decorateRequest('principal', undefined);
    app.decorateRequest('operator', undefined);
    app.addHook('onRequest', async (request, reply) => {
      if (isPublic(request)) return;
      const header = request.headers.authorization;
      const m = header ? /^Bearer\s+(\S+)$/i.exec(header) : null;
      if (!m) throw new UnauthorizedError('missing Authorization: Bearer <api key or token>');
      const token = m[1]!;
      let caller: Principal | PlatformOperator;
      if (token.startsWith(`${SERVICE_CREDENTIAL_PREFIX}_`)) {
        if (request.routeOptions.config?.serviceCredential !== true)
          throw new ForbiddenError('a service credential reaches the inference routes only');
        caller =
          serviceCredentialInMemory(token) ??
          (await withinBudget(request, reply, vouched.has(token), () =>
            vouchedFor(token, () => fromServiceCredential(token)),
          ));
      } else if (token.startsWith(`${PLATFORM_KEY_PREFIX}_`)) {
        // Not cached: operators' calls are few, and a revoked operator key must stop at once.
        caller = await withinBudget(request, reply, vouched.has(token), () =>
          vouchedFor(token, async () => {
            const key = await opts.tenants.verifyPlatformKey(token);
            if (!key) throw new UnauthorizedError('invalid API key');
            refuseEnded(key);
            return { subject: `platform-key:${key.id}`, via: 'platform_key' as const };
          }),
        );
      } else if (token.startsWith('llmhub_')) {
        // A key verified within the cache's TTL is answered without a promise (it is recognised: no budget either).
        const cached = keys.cached(token);
        caller = cached
          ? principalOfKey(cached)
          : await withinBudget(request, reply, keys.recognises(token), async () => {
              const key = await keys.verifyApiKey(token);
              if (!key) throw new UnauthorizedError('invalid API key');
              return principalOfKey(key);
            });
      } else {
        caller = await withinBudget(request, reply, vouched.has(token), () => vouchedFor(token, () => fromJwt(token)));
      }
      // No route: the not-found handler answers 404, or 405 for a path of other methods, to either kind of caller.
      if (request.is404) {
        if ('tenantId' in caller) request.principal = caller;
        else request.operator = caller;
        return;
      }
      const platformRoute = request.routeOptions.config?.platform === true;
      if (!('tenantId' in caller)) {
        if (!platformRoute)
          throw new ForbiddenError(
            'platform operators are members of no tenant: tenant routes need a tenant member’s key or token',
          );
        request.operator = caller;
        return;
      }
      if (platformRoute) throw new ForbiddenError('this route is for platform operators only');
      const principal = caller;
      request.principal = principal;
      const asTenant = request.headers['x-tenant-id'];
      if (asTenant !== undefined && asTenant !== principal.tenantId) {
        throw new ForbiddenError(
          `credentials of tenant '${principal.tenantId}' cannot act for tenant '${String(asTenant)}'`,
        );
      }
    });
  },
  { name: 'auth' },
);
