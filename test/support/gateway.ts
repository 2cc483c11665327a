import type { FastifyInstance } from 'fastify';
import type { Pool } from 'pg';
import { RegistryStore } from '../../common/store/registry';
import { RoutingStore, type RouteSpec } from '../../common/store/routing';
import { bearer, eventually } from './platform';

/** Registers a model with versions served at the given URLs and routes it; the gateway learns it by notification. */
export async function serveModel(
  db: Pool,
  tenantId: string,
  modelId: string,
  endpoints: Record<string, string>,
  route: RouteSpec,
): Promise<void> {
  const registry = new RegistryStore(db);
  const routing = new RoutingStore(db);
  await registry.createModel(tenantId, {
    id: modelId,
    name: modelId,
    description: 'served by reference model servers',
  });
  for (const [version, url] of Object.entries(endpoints)) {
    await registry.insertVersion(db, tenantId, {
      modelId,
      version,
      artifactUri: `s3://models/${modelId}/${version}`,
      workflowId: `test/${modelId}/${version}`,
    });
    await routing.setVersionEndpoint(tenantId, modelId, version, url);
  }
  await routing.setRoute(tenantId, modelId, route);
}

/** Waits until the in-process gateway routes the model (its route cache refreshes asynchronously). */
export const untilRouted = (app: FastifyInstance, key: string, model: string) =>
  eventually(`the gateway to route ${model}`, async () => {
    const res = await app.inject({
      method: 'POST',
      url: '/v1/embeddings',
      headers: bearer(key),
      payload: { model, input: 'ping' },
    });
    return res.statusCode !== 404;
  });
