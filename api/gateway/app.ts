import type { FastifyInstance } from 'fastify';
import { RegistryStore } from '../../common/store/registry';
import { createHttpApp, registerGateway, type HttpAppDeps } from '../http-app';
import { refuseUnstorableText } from '../plugins/storable-text';
import { healthRoutes } from '../routes/health';
import { modelListRoutes } from '../routes/model-list';

/**
 * Builds the gateway role's app: the inference routes, /v1/models, /healthz, /readyz and /metrics. It imports none of
 * the control routes' modules (knowledge, parsing, conversion, the Temporal client), so a gateway replica's heap
 * holds only what a request needs; everything it reads (keys, routes, limits) is in PostgreSQL.
 */
export async function buildGatewayApp(deps: HttpAppDeps): Promise<FastifyInstance> {
  const http = await createHttpApp(deps);
  await http.app.register(healthRoutes, { checks: { database: () => deps.db.query('SELECT 1') } });
  await registerGateway(http, deps);
  await http.app.register(async (models) => {
    refuseUnstorableText(models);
    await models.register(modelListRoutes, { prefix: '/v1/models', registry: new RegistryStore(deps.db) });
  });
  return http.app;
}
