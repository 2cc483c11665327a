import type { FastifyInstance } from 'fastify';
import type { Pool } from 'pg';
import type { HttpAppDeps } from '../api/http-app';
import { loadGatewaySettings } from '../api/gateway/settings';
import type { Config } from '../common/config';
import { CredentialVault, KeyFileKeks } from '../common/credentials';
import { EgressPolicy } from '../common/egress';
import type { Logger } from '../common/logger';

/** The settings the api and gateway roles share, from the environment (common/config.ts, GATEWAY_*). */
export function httpAppDepsOf(config: Config, db: Pool, logger: Logger): HttpAppDeps {
  return {
    db,
    logger,
    bodyLimitBytes: config.API_BODY_LIMIT_BYTES,
    requestTimeoutMs: config.API_REQUEST_TIMEOUT_MS,
    auditRetentionDays: config.AUDIT_RETENTION_DAYS,
    trustedProxies: config.API_TRUSTED_PROXIES.split(',')
      .map((p) => p.trim())
      .filter(Boolean),
    auth: { failuresPerMinute: config.API_AUTH_FAILURES_PER_MINUTE },
    gateway: loadGatewaySettings(),
    webhookEgress: EgressPolicy.fromEnv(config.LLMHUB_WEBHOOK_EGRESS_ALLOW, { setting: 'LLMHUB_WEBHOOK_EGRESS_ALLOW' }),
    jwt: {
      jwksUrl: config.JWT_JWKS_URL,
      issuer: config.JWT_ISSUER,
      audience: config.JWT_AUDIENCE,
      platformAdminClaim: config.JWT_PLATFORM_ADMIN_CLAIM,
    },
    ...(config.LLMHUB_KEK_FILE
      ? {
          providers: {
            vault: new CredentialVault(new KeyFileKeks(config.LLMHUB_KEK_FILE)),
            egress: EgressPolicy.fromEnv(config.LLMHUB_PROVIDER_EGRESS_ALLOW, {
              setting: 'LLMHUB_PROVIDER_EGRESS_ALLOW',
            }),
          },
        }
      : {}),
  };
}

/**
 * Listens on API_HOST:API_PORT; on SIGTERM/SIGINT closes the app, then what it used (`release`), and exits.
 * After app.close, not in an onClose hook: those run last-registered first, so the pool would end before the
 * gateway's and the audit's final flushes.
 */
export async function serveUntilStopped(
  app: FastifyInstance,
  config: Pick<Config, 'API_HOST' | 'API_PORT'>,
  logger: Logger,
  release: () => Promise<void>,
): Promise<void> {
  const close = () => {
    logger.info('shutting down');
    app
      .close()
      .then(release)
      .then(
        () => process.exit(0),
        () => process.exit(1),
      );
  };
  process.once('SIGTERM', close);
  process.once('SIGINT', close);
  await app.listen({ host: config.API_HOST, port: config.API_PORT });
}

/** Runs a role's main; a failure to start is printed (a config error names its variable) and ends the process. */
export function runRole(main: () => Promise<void>): void {
  main().catch((err) => {
    console.error(err instanceof Error ? err.message : err);
    process.exit(1);
  });
}
