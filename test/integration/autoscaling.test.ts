import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { Client as PgClient } from 'pg';
import { localEndpointKey, localEndpoints } from '../../activities/kubernetes/endpoints';
import { AUTOSCALER_FIELD_MANAGER } from '../../activities/kubernetes/manifests';
import {
  autoscalerStatusQuery,
  autoscalerWorkflowId,
  type AutoscaleDecision,
  type AutoscalerStatus,
} from '../../contracts/autoscaling';
import { testKubeConfig } from '../../deploy/dev/kube/cluster';
import { GpuQuotaStore } from '../../common/store/gpu-quota';
import { ServedVersionStore } from '../../common/store/served-versions';
import { startReferenceModelServer, type ReferenceModelServer } from '../../deploy/dev/model-server/server';
import {
  bearer,
  eventually,
  startTestPlatform,
  uniqueId,
  type TestPlatform,
  type TestTenant,
} from '../support/platform';
import { untilReplicas } from '../support/autoscaling';
import { rolloutClient, trafficFrom } from '../support/rollout';

/**
 * Autoscaling on the kwok cluster `local`: Deployments and their scale subresource are real API objects there and kwok
 * marks pods ready, but runs no containers, so each version's traffic goes to a local reference server
 * (activities/kubernetes/endpoints.ts). Short sync period and window (LLMHUB_AUTOSCALE_*) keep it quick.
 */
const endpoints = new Map<string, string>();
let p: TestPlatform;
let acme: TestTenant;
let baseURL: string;
let api: ReturnType<typeof rolloutClient>;
const servers: ReferenceModelServer[] = [];
const loads: (() => Promise<void>)[] = [];

beforeAll(async () => {
  p = await startTestPlatform({
    gateway: { metricsFlushMs: 200, refreshMs: 500, coldWaitMs: 90_000 },
    activityDeps: {
      kubeConfigOf: (cluster) => (cluster === 'local' ? testKubeConfig() : undefined),
      endpointOf: localEndpoints(endpoints),
      autoscale: { syncMs: 500, windowMs: 3_000 },
    },
  });
  baseURL = `${await p.app.listen({ host: '127.0.0.1', port: 0 })}/v1`;
  acme = await p.createTenant('scale');
  api = rolloutClient(p, acme);
});
afterAll(async () => {
  await Promise.all(loads.map((stop) => stop()));
  await p?.close();
  await Promise.all(servers.map((s) => s.close()));
});

/** A registered model with ready versions, each served by its own reference server answering after `latencyMs`. */
async function model(versions: string[], latencyMs = 0) {
  const id = uniqueId('m');
  await p.registry.createModel(acme.id, { id, name: id, description: 'autoscaled' });
  const byVersion: Record<string, ReferenceModelServer> = {};
  for (const v of versions) {
    const server = await startReferenceModelServer({ name: `${id}-${v}`, faults: { latencyMs } });
    servers.push(server);
    byVersion[v] = server;
    await api.addVersion(endpoints, id, v, server.url);
  }
  return { id, servers: byVersion };
}

/**
 * The wake-up channel's notifications, in commit order: `until()` sends a marker on a channel of its own and resolves
 * with what came on the wake-up channel before it, so "nothing came" is checked without waiting for time to pass.
 */
async function wakeNotifications() {
  const listener = new PgClient(p.db.options);
  await listener.connect();
  const seen: string[] = [];
  const markers = new Map<string, () => void>();
  listener.on('notification', (n) => {
    if (n.channel === 'llmhub_autoscale') seen.push(n.payload ?? '');
    else markers.get(n.payload ?? '')?.();
  });
  await listener.query('LISTEN llmhub_autoscale');
  await listener.query('LISTEN llmhub_test_marker');
  return {
    async until(): Promise<string[]> {
      const marker = uniqueId('marker');
      const arrived = new Promise<void>((resolve) => markers.set(marker, resolve));
      await p.db.query('SELECT pg_notify($1, $2)', ['llmhub_test_marker', marker]);
      await arrived;
      return seen.splice(0);
    },
    close: () => listener.end(),
  };
}

const deploy = async (modelId: string, version: string, autoscaling: object, strategy?: object) => {
  const res = await api.deploy({
    modelId,
    version,
    cluster: 'local',
    resources: { cpu: '100m', gpu: 0 },
    autoscaling,
    ...(strategy ? { strategy } : {}),
  });
  expect(res.statusCode).toBe(202);
  return res.json<{ deploymentId: string }>().deploymentId;
};

const autoscaler = (modelId: string, version: string): Promise<AutoscalerStatus> =>
  p.temporal.workflow.getHandle(autoscalerWorkflowId(acme.id, modelId, version)).query(autoscalerStatusQuery);

const replicasOf = async (modelId: string, version: string) => (await api.readDeployment(modelId, version))?.spec;

/** Steady chat traffic from a separate process, stopped at the end if a test did not. */
function load(modelId: string, concurrency: number) {
  const traffic = trafficFrom(baseURL, acme.keys.developer, modelId, concurrency);
  loads.push(() => traffic.stop());
  return traffic;
}

const chat = (modelId: string) =>
  fetch(`${baseURL}/chat/completions`, {
    method: 'POST',
    headers: { ...bearer(acme.keys.developer), 'content-type': 'application/json' },
    body: JSON.stringify({ model: modelId, messages: [{ role: 'user', content: 'hello' }] }),
  });

/**
 * Every scale-down waited out the stabilisation window: no recommendation above it in the window before it. The window
 * counts back from when each pass read its load (measuredAt), not from when it was recorded: a loaded machine's slow
 * writes between the two would otherwise move a recommendation in or out of the window.
 */
function expectStabilised(decisions: AutoscaleDecision[], windowMs: number) {
  const measured = decisions.map((x) => ({ ...x, measuredAt: x.measuredAt ?? Number.NaN }));
  expect(measured.filter((x) => Number.isNaN(x.measuredAt))).toEqual([]);
  for (const d of measured.filter((x) => x.reason === 'scale_down'))
    expect(
      measured
        .filter((x) => x.measuredAt > d.measuredAt - windowMs && x.measuredAt <= d.measuredAt && x.desired > d.applied)
        .map((x) => x.measuredAt),
    ).toEqual([]);
}

describe('autoscaling', () => {
  it('settings are validated naming the field', async () => {
    const { id } = await model(['v1']);
    const bad = [
      // What no schema can say (a minimum above the maximum) is 409, as the API's other cross-field checks.
      [{ minReplicas: 3, maxReplicas: 2, target: { concurrency: 1 } }, 409, 'body.autoscaling.maxReplicas'],
      [{ minReplicas: 0, maxReplicas: 2, target: { concurrency: 0 } }, 400, 'body.autoscaling.target'],
      [
        { minReplicas: 0, maxReplicas: 2, target: { concurrency: 1 }, scaleDownDelay: 'soon' },
        400,
        'body.autoscaling.scaleDownDelay',
      ],
    ] as const;
    for (const [autoscaling, status, field] of bad) {
      const res = await api.deploy({ modelId: id, version: 'v1', cluster: 'local', autoscaling });
      expect(res.statusCode).toBe(status);
      expect(JSON.stringify(res.json())).toContain(field);
    }
  });

  it('only a wake-up request notifies the relay: its take does not (no loop of takes)', async () => {
    const m = await model(['v1']);
    const key = { tenantId: acme.id, modelId: m.id, version: 'v1' };
    const store = new ServedVersionStore(p.db);
    await store.record({ ...key, cluster: 'local', spec: {}, autoscaling: null });
    const feed = await wakeNotifications();
    try {
      await feed.until();
      // Before migration 0022 this take notified, the relay took again, and so on, about 200 times a second.
      await store.takeWakes();
      expect(await feed.until()).toEqual([]);
      // A request notifies; taken in the same transaction, so the running relay finds nothing to start.
      const tx = await p.db.connect();
      try {
        await tx.query('BEGIN');
        await tx.query(
          'UPDATE served_versions SET wake_requested_at = now() WHERE tenant_id = $1 AND model_id = $2 AND version = $3',
          [key.tenantId, key.modelId, key.version],
        );
        await tx.query(
          'UPDATE served_versions SET wake_requested_at = NULL WHERE tenant_id = $1 AND model_id = $2 AND version = $3',
          [key.tenantId, key.modelId, key.version],
        );
        await tx.query('COMMIT');
      } finally {
        tx.release();
      }
      expect(await feed.until()).toEqual(['wake']);
    } finally {
      await feed.close();
    }
  });

  it('load from another process raises replicas to the expected count, and they go back to the minimum after the delay', async () => {
    // 6 callers in flight (each answer takes 1 s, so a loaded machine's own delays between a caller's requests leave
    // the load near 6) at a target of 2.5 per replica: 3 replicas for any measured load in (5, 7.5], which the
    // window's edges (a request that began before it counts whole) keep it in.
    const m = await model(['v1'], 1_000);
    const settings = {
      minReplicas: 1,
      maxReplicas: 5,
      target: { concurrency: 2.5 },
      scaleDownDelay: '3s',
      scaleToZeroAfter: '1h',
    };
    await api.untilPhase(await deploy(m.id, 'v1', settings), 'promoted');
    const traffic = load(m.id, 6);
    const read = async () => ({
      status: await autoscaler(m.id, 'v1').catch(() => undefined),
      replicas: (await replicasOf(m.id, 'v1'))?.replicas,
    });
    // The 3 s window fills in about 6 passes of 500 ms, one step reaches 3; 60 passes without it is a failure anywhere.
    const up = await untilReplicas(read, Date.now(), 3, 60);
    expect(up.decisions.some((d) => d.reason === 'scale_up' && d.applied === 3)).toBe(true);
    expect(up.settings).toEqual(settings);
    const deployment = await api.readDeployment(m.id, 'v1');
    // One owner of replicas: the rollout's apply (field manager llmhub) names none for an autoscaled version, so a
    // re-apply never resets what the autoscaler applied through the scale subresource.
    const owners = (deployment?.metadata?.managedFields ?? [])
      .filter((f) => (f.fieldsV1 as { 'f:spec'?: { 'f:replicas'?: object } } | undefined)?.['f:spec']?.['f:replicas'])
      .map((f) => ({ manager: f.manager, operation: f.operation, subresource: f.subresource }));
    expect(owners).toEqual([{ manager: AUTOSCALER_FIELD_MANAGER, operation: 'Apply', subresource: 'scale' }]);
    await eventually('kwok pods of the 3 replicas ready', async () => {
      const d = await api.readDeployment(m.id, 'v1');
      return d?.status?.readyReplicas === 3;
    });
    await traffic.stop();
    const stopped = Date.now();
    expect(new Set(traffic.statuses)).toEqual(new Set([200]));

    // The load leaves the 3 s window and the 3 s delay passes in about 12 passes of 500 ms; 60 is a failure anywhere.
    const down = await untilReplicas(read, stopped, 1, 60);
    expect(down.decisions.filter((d) => d.reason === 'scale_down').length).toBeGreaterThan(0);
    expect(Math.max(...down.decisions.map((d) => d.applied))).toBe(3);
    expectStabilised(down.decisions, 3_000);
  });

  it('scales to zero, then 50 concurrent cold requests cause one scale-up and are all answered', async () => {
    const m = await model(['v1']);
    await api.untilPhase(
      await deploy(m.id, 'v1', {
        minReplicas: 0,
        maxReplicas: 2,
        target: { concurrency: 100 },
        scaleDownDelay: '1s',
        scaleToZeroAfter: '2s',
      }),
      'promoted',
    );
    await eventually('scaled to zero', async () => {
      const s = await autoscaler(m.id, 'v1');
      return (await replicasOf(m.id, 'v1'))?.replicas === 0 && s.decisions.at(-1)?.reason === 'scale_to_zero';
    });
    // Nothing listens while the version has no replica; the next start serves from a new server.
    await m.servers.v1!.close();
    const fresh = await startReferenceModelServer({ name: `${m.id}-v1-again` });
    servers.push(fresh);
    endpoints.set(localEndpointKey({ tenantId: acme.id, modelId: m.id, version: 'v1' }), fresh.url);

    const answers = await Promise.all(Array.from({ length: 50 }, () => chat(m.id)));
    expect(answers.map((r) => r.status)).toEqual(new Array(50).fill(200));
    expect(fresh.received()).toBe(50);
    const s = await autoscaler(m.id, 'v1');
    const zero = s.decisions.findLastIndex((d) => d.reason === 'scale_to_zero');
    const fromZero = s.decisions.slice(zero + 1).filter((d) => d.current === 0 && d.applied > 0);
    expect(fromZero.map((d) => d.reason)).toEqual(['wake']);
    expect((await replicasOf(m.id, 'v1'))?.replicas).toBe(1);
    // The decision log through the API, for the tenant's own version only.
    const url = `/v1/models/${m.id}/versions/v1/autoscaler`;
    const own = await p.app.inject({ method: 'GET', url, headers: bearer(acme.keys.viewer) });
    expect(own.statusCode).toBe(200);
    expect(own.json<AutoscalerStatus>().decisions.map((d) => d.reason)).toContain('wake');
    const other = await p.createTenant('other');
    expect((await p.app.inject({ method: 'GET', url, headers: bearer(other.keys.admin) })).statusCode).toBe(404);
  });

  it('a rollout started during autoscaling: the autoscaler yields, no replica fight, and the new version is autoscaled', async () => {
    const m = await model(['v1', 'v2']);
    const settings = { minReplicas: 2, maxReplicas: 4, target: { concurrency: 100 }, scaleDownDelay: '1s' };
    await api.untilPhase(await deploy(m.id, 'v1', settings), 'promoted');
    // Its autoscaler starts before v1's own rollout lets go of the model, so it may yield to that one first: what counts
    // is what it writes once it has set v1's minimum.
    await eventually(
      'v1 at its minimum of 2',
      async () =>
        (await replicasOf(m.id, 'v1'))?.replicas === 2 &&
        (await autoscaler(m.id, 'v1')).decisions.some((d) => d.applied === 2),
    );
    const atMinimum = Date.now();
    const rollout = await deploy(m.id, 'v2', settings, {
      steps: [{ setWeight: 50 }, { pause: {} }],
      analysis: { interval: '1s', minRequests: 1 },
    });
    await api.untilPhase(rollout, 'paused');
    // Counted from atMinimum, as below: yields to v1's own rollout came before it.
    const yieldedSinceMinimum = (s: AutoscalerStatus) =>
      s.decisions.filter((d) => d.at > atMinimum && d.reason === 'yielded_to_rollout').length;
    const yielding = await eventually('v1 autoscaler yielding for 3 passes', async () => {
      const s = await autoscaler(m.id, 'v1');
      return yieldedSinceMinimum(s) >= 3 && s;
    });
    expect(yielding.phase).toBe('yielding');
    expect((await replicasOf(m.id, 'v1'))?.replicas).toBe(2);
    expect((await replicasOf(m.id, 'v2'))?.replicas).toBe(1);
    expect((await api.steer(rollout, 'promote')).statusCode).toBe(200);
    await api.untilPhase(rollout, 'promoted');

    const v1 = await eventually('v1 autoscaler stopped', async () => {
      const s = await autoscaler(m.id, 'v1');
      return s.phase === 'stopped' && s;
    });
    // From then on v1's autoscaler wrote nothing: the rollout scaled it to 0 and it stayed there.
    expect(v1.decisions.filter((d) => d.at > atMinimum && d.applied !== d.current)).toEqual([]);
    expect(yieldedSinceMinimum(v1)).toBeGreaterThan(2);
    expect((await replicasOf(m.id, 'v1'))?.replicas).toBe(0);
    await eventually('v2 autoscaled to its minimum of 2', async () => {
      const s = await autoscaler(m.id, 'v2').catch(() => undefined);
      return (await replicasOf(m.id, 'v2'))?.replicas === 2 && s?.decisions.some((d) => d.applied === 2);
    });
  });

  it('replicas × GPUs count against the tenant GPU quota; a capped scale-up is recorded as such', async () => {
    await new GpuQuotaStore(p.db).setQuota(acme.id, 2);
    const m = await model(['v1']);
    const res = await api.deploy({
      modelId: m.id,
      version: 'v1',
      cluster: 'local',
      resources: { cpu: '100m', gpu: 1 },
      autoscaling: { minReplicas: 3, maxReplicas: 3, target: { concurrency: 100 } },
    });
    expect(res.statusCode).toBe(202);
    await api.untilPhase(res.json<{ deploymentId: string }>().deploymentId, 'promoted');
    const capped = await eventually('a scale-up capped by the quota', async () => {
      const s = await autoscaler(m.id, 'v1');
      return s.decisions.find((d) => d.reason === 'quota_capped' && d.applied === 2);
    });
    expect(capped).toMatchObject({ current: 1, desired: 3 });
    expect(capped.message).toContain('GPU quota');
    expect((await replicasOf(m.id, 'v1'))?.replicas).toBe(2);
    expect((await new GpuQuotaStore(p.db).usage(acme.id)).held.serving).toBe(2);
  });
});
