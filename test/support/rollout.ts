import { spawn } from 'node:child_process';
import path from 'node:path';
import { expect } from '@jest/globals';
import { localEndpointKey } from '../../activities/kubernetes/endpoints';
import { defaultNamespaceOf, servingName } from '../../activities/kubernetes/manifests';
import type { RolloutStatus } from '../../contracts/rollout';
import { isNotFound, kube } from '../integration/kube/kube-helpers';
import { bearer, eventually, uniqueId, type TestPlatform, type TestTenant } from './platform';

/** The object, or undefined when the API server answers 404. */
async function unlessNotFound<T>(read: () => Promise<T>): Promise<T | undefined> {
  try {
    return await read();
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}

/** The rollout API (POST /v1/deploy, /v1/deployments/…) and the cluster, as one tenant's tests drive and check them. */
export function rolloutClient(p: TestPlatform, tenant: TestTenant) {
  const k = kube();
  const servedName = (modelId: string, version: string) => ({
    name: servingName(modelId, version),
    namespace: defaultNamespaceOf(tenant.id),
  });
  const deploy = (body: object, key = uniqueId('dep'), apiKey = tenant.keys.developer) =>
    p.app.inject({
      method: 'POST',
      url: '/v1/deploy',
      headers: { ...bearer(apiKey), 'idempotency-key': key },
      payload: body,
    });
  const status = async (id: string): Promise<RolloutStatus> => {
    const res = await p.app.inject({
      method: 'GET',
      url: `/v1/deployments/${id}`,
      headers: bearer(tenant.keys.viewer),
    });
    expect(res.statusCode).toBe(200);
    return res.json();
  };
  return {
    deploy,
    status,
    steer: (id: string, action: string, apiKey = tenant.keys.operator) =>
      p.app.inject({
        method: 'POST',
        url: `/v1/deployments/${id}/${action}`,
        headers: bearer(apiKey),
        payload: { reason: 'test' },
      }),
    untilPhase: (id: string, ...phases: RolloutStatus['phase'][]) =>
      eventually(`deployment ${id} to reach ${phases.join('/')}`, async () => {
        const s = await status(id);
        return phases.includes(s.phase) && s;
      }),
    readDeployment: (modelId: string, version: string) =>
      unlessNotFound(() => k.apps.readNamespacedDeployment(servedName(modelId, version))),
    readService: (modelId: string, version: string) =>
      unlessNotFound(() => k.core.readNamespacedService(servedName(modelId, version))),
    /** Registers a ready version served (for the kwok cluster, which runs no containers) by the local server at `url`. */
    async addVersion(endpoints: Map<string, string>, modelId: string, version: string, url: string) {
      await p.registry.insertVersion(p.db, tenant.id, {
        modelId,
        version,
        artifactUri: `s3://models/${modelId}/${version}`,
        workflowId: `test/${modelId}/${version}`,
      });
      await p.registry.markVersionReady(tenant.id, modelId, version, {
        sizeBytes: 1,
        checksum: 'sha256:00',
        etag: null,
      });
      endpoints.set(localEndpointKey({ tenantId: tenant.id, modelId, version }), url);
    },
  };
}

/** Steady traffic through a listening gateway from a separate process, as applications would send it. */
export function trafficFrom(baseURL: string, apiKey: string, modelId: string, concurrency = 3) {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', path.join(__dirname, 'load-generator.ts'), baseURL, apiKey, modelId, String(concurrency)],
    {
      env: { ...process.env, NODE_OPTIONS: '' },
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  // 'close', not 'exit': at 'exit' the end of its stdout may not have been read yet (CI parsed JSON cut at 146 KB).
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
  const traffic = {
    statuses: [] as number[],
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
      traffic.statuses = JSON.parse(out.slice(out.indexOf('{'))).statuses;
    },
  };
  return traffic;
}

/** A deploy request on the kwok cluster 'local' rolling out v2. */
export const rolloutRequest = (modelId: string, strategy: object) => ({
  modelId,
  cluster: 'local',
  resources: { cpu: '500m', gpu: 0 },
  env: { LOG_LEVEL: 'info' },
  version: 'v2',
  strategy,
});
