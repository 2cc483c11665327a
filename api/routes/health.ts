import type { FastifyBaseLogger } from 'fastify';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';

const Health = Type.Object({ status: Type.String(), checks: Type.Optional(Type.Record(Type.String(), Type.String())) });

/**
 * Runs each dependency check: `ok` or `unavailable` per dependency. The reason goes to the log only: driver errors
 * carry host names, ports and user names, and /readyz answers anyone.
 */
export async function readiness(
  checks: Record<string, () => Promise<unknown>>,
  log: Pick<FastifyBaseLogger, 'warn'>,
): Promise<{ ready: boolean; checks: Record<string, 'ok' | 'unavailable'> }> {
  const results: Record<string, 'ok' | 'unavailable'> = {};
  await Promise.all(
    Object.entries(checks).map(([name, check]) =>
      check().then(
        () => (results[name] = 'ok'),
        (err: unknown) => {
          results[name] = 'unavailable';
          log.warn({ dependency: name, err }, 'readiness check failed');
        },
      ),
    ),
  );
  return { ready: Object.values(results).every((v) => v === 'ok'), checks: results };
}

/** Liveness answers from memory; readiness proves the role can reach what it needs (`checks`: its database, Temporal). */
export const healthRoutes: FastifyPluginAsyncTypebox<{ checks: Record<string, () => Promise<unknown>> }> = async (
  app,
  { checks },
) => {
  app.get(
    '/healthz',
    { config: { public: true }, schema: { tags: ['health'], response: { 200: Health } } },
    async () => ({ status: 'ok' }),
  );

  app.get(
    '/readyz',
    { config: { public: true }, schema: { tags: ['health'], response: { 200: Health, 503: Health } } },
    async (request, reply) => {
      const { ready, checks: results } = await readiness(checks, request.log);
      return reply.status(ready ? 200 : 503).send({ status: ready ? 'ready' : 'not_ready', checks: results });
    },
  );
};
