import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';

const Health = Type.Object({ status: Type.String(), checks: Type.Optional(Type.Record(Type.String(), Type.String())) });

/** Liveness answers from memory; readiness proves the API can reach its database and Temporal. */
export const healthRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.get(
    '/healthz',
    { config: { public: true }, schema: { tags: ['health'], response: { 200: Health } } },
    async () => ({ status: 'ok' }),
  );

  app.get(
    '/readyz',
    { config: { public: true }, schema: { tags: ['health'], response: { 200: Health, 503: Health } } },
    async (_req, reply) => {
      const checks: Record<string, string> = {};
      await Promise.all([
        app.platform.db.query('SELECT 1').then(
          () => (checks.database = 'ok'),
          (err: Error) => (checks.database = err.message),
        ),
        app.platform.temporal.workflowService.getSystemInfo({}).then(
          () => (checks.temporal = 'ok'),
          (err: Error) => (checks.temporal = err.message),
        ),
      ]);
      const ok = Object.values(checks).every((v) => v === 'ok');
      return reply.status(ok ? 200 : 503).send({ status: ok ? 'ready' : 'not_ready', checks });
    },
  );
};
