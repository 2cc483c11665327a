import { rolloutSteering } from '../../contracts/rollout';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { localEndpoints } from '../../activities/kubernetes/endpoints';
import { PatchStrategy } from '@kubernetes/client-node';
import { tenantNamespace } from '../../activities/kubernetes/client';
import { defaultNamespaceOf, Labels } from '../../activities/kubernetes/manifests';
import { PhaseKey } from '../../contracts/search-attributes';
import { RoutingStore } from '../../common/store/routing';
import { testKubeConfig } from '../../deploy/dev/kube/cluster';
import { startReferenceModelServer, type ReferenceModelServer } from '../../deploy/dev/model-server/server';
import { serveModel, untilRouted } from '../support/gateway';
import {
  bearer,
  eventually,
  startTestPlatform,
  uniqueId,
  type TestPlatform,
  type TestTenant,
} from '../support/platform';
import { rolloutClient, rolloutRequest as request, trafficFrom } from '../support/rollout';
import { BEHAVIOUR, kube } from './kube/kube-helpers';

/** Version → local reference server: the kwok cluster runs no containers (activities/kubernetes/endpoints.ts). */
const endpoints = new Map<string, string>();
let p: TestPlatform;
let acme: TestTenant;
let baseURL: string;
let api: ReturnType<typeof rolloutClient>;
let routing: RoutingStore;
const servers: ReferenceModelServer[] = [];
const loads: (() => Promise<void>)[] = [];

beforeAll(async () => {
  p = await startTestPlatform({
    gateway: { metricsFlushMs: 200, refreshMs: 500 },
    activityDeps: {
      kubeConfigOf: (cluster) => (cluster === 'local' ? testKubeConfig() : undefined),
      endpointOf: localEndpoints(endpoints),
    },
  });
  baseURL = `${await p.app.listen({ host: '127.0.0.1', port: 0 })}/v1`;
  acme = await p.createTenant('acme');
  api = rolloutClient(p, acme);
  routing = new RoutingStore(p.db);
});
afterAll(async () => {
  await Promise.all(loads.map((stop) => stop()));
  await p?.close();
  await Promise.all(servers.map((s) => s.close()));
});

const addVersion = (modelId: string, version: string, url: string) => api.addVersion(endpoints, modelId, version, url);

/** A model served by a stable reference server (v1) with a ready version v2 whose server is the canary's. */
async function model() {
  const id = uniqueId('m');
  const stable = await startReferenceModelServer({ name: `${id}-v1` });
  const canary = await startReferenceModelServer({ name: `${id}-v2` });
  servers.push(stable, canary);
  await serveModel(p.db, acme.id, id, { v1: stable.url }, { stable: 'v1' });
  await addVersion(id, 'v2', canary.url);
  await untilRouted(p.app, acme.keys.developer, id);
  return { id, stable, canary };
}

function load(modelId: string, concurrency = 3) {
  const traffic = trafficFrom(baseURL, acme.keys.developer, modelId, concurrency);
  loads.push(() => traffic.stop());
  return traffic;
}

const FAST = { interval: '2s', minRequests: 3, minSuccessRate: 0.9, failureLimit: 2, inconclusiveLimit: 20 };
const steps = (...weights: number[]) =>
  weights.flatMap((w) => [{ setWeight: w }, { pause: { duration: '2s' } }, { analysis: {} }]);

describe('model rollout', () => {
  it('promotes a healthy canary through 10/50/100 under traffic; a later promote-now scales the old stable to 0', async () => {
    const m = await model();
    const traffic = load(m.id);
    const res = await api.deploy(request(m.id, { steps: steps(10, 50, 100), analysis: FAST }));
    expect(res.statusCode).toBe(202);
    const { deploymentId } = res.json();
    const done = await api.untilPhase(deploymentId, 'promoted', 'rolled_back');
    expect({ phase: done.phase, reason: done.failureReason }).toEqual({ phase: 'promoted', reason: null });
    expect(done.analyses.filter((a) => a.phase === 'Successful').map((a) => a.stepIndex)).toEqual([2, 5, 8]);
    expect(await routing.getRoute(acme.id, m.id)).toMatchObject({
      stable: 'v2',
      canary: null,
      canaryWeight: 0,
      endpoints: { v2: m.canary.url },
    });
    const v2 = await api.readDeployment(m.id, 'v2');
    expect(v2?.spec?.replicas).toBe(1);
    expect(v2?.metadata?.labels).toMatchObject({
      [Labels.tenant]: acme.id,
      [Labels.model]: m.id,
      [Labels.version]: 'v2',
    });
    expect(v2?.metadata?.annotations?.[Labels.workflowId]).toBe(`rollout/${acme.id}/${deploymentId}`);
    expect(v2?.spec?.template.spec?.containers[0]?.env).toContainEqual({ name: 'LOG_LEVEL', value: 'info' });
    await eventually(
      'the gateway to send traffic to v2',
      async () =>
        m.canary.received() > 0 &&
        (
          await p.app.inject({
            method: 'POST',
            url: '/v1/chat/completions',
            headers: bearer(acme.keys.developer),
            payload: { model: m.id, messages: [{ role: 'user', content: 'x' }] },
          })
        ).headers['x-llmhub-model-version'] === 'v2',
    );

    // The lock was released at the end, so the next version may roll out; a step pause waits for a person.
    const v3 = await startReferenceModelServer({ name: `${m.id}-v3` });
    servers.push(v3);
    await addVersion(m.id, 'v3', v3.url);
    const next = await api.deploy({
      ...request(m.id, { steps: [{ setWeight: 30 }, { pause: {} }, { setWeight: 60 }] }),
      version: 'v3',
    });
    expect(next.statusCode).toBe(202);
    const nextId: string = next.json().deploymentId;
    const paused = await api.untilPhase(nextId, 'paused');
    expect(paused).toMatchObject({
      pauseReason: 'step',
      currentStepIndex: 1,
      weights: { stable: 'v2', canary: 'v3', canaryWeight: 30 },
    });
    expect((await api.steer(nextId, 'promote', acme.keys.viewer)).statusCode).toBe(403);
    expect((await api.steer(nextId, 'promote')).statusCode).toBe(200);
    await api.untilPhase(nextId, 'promoted');
    expect(await routing.getRoute(acme.id, m.id)).toMatchObject({ stable: 'v3', canary: null });
    expect((await api.readDeployment(m.id, 'v2'))?.spec?.replicas).toBe(0);
    await traffic.stop();
    // The gateway fell back to stable on every canary failure, so callers never saw an error.
    expect(traffic.statuses.filter((s) => s !== 200)).toEqual([]);
  });

  it('rolls a canary answering 30% 5xx back right after the failureLimit-th Failed analysis', async () => {
    const m = await model();
    const traffic = load(m.id);
    const res = await api.deploy(request(m.id, { steps: steps(20, 50, 100), analysis: FAST }));
    const { deploymentId } = res.json();
    await eventually('canary traffic', async () => (await api.status(deploymentId)).weights.canaryWeight > 0);
    m.canary.faults.errorRate = 0.3;
    const wentBad = Date.now();
    await eventually(
      'stable 100% in the routing state',
      async () => (await routing.getRoute(acme.id, m.id))?.canary === null,
    );
    const toStableMs = Date.now() - wentBad;
    const done = await api.untilPhase(deploymentId, 'rolled_back');
    const failed = done.analyses.filter((a) => a.phase === 'Failed');
    expect(failed).toHaveLength(FAST.failureLimit);
    // The last measurements are the Failed ones, consecutive, and the rollback started right after the last of them.
    expect(done.analyses.slice(-FAST.failureLimit).map((a) => a.phase)).toEqual(['Failed', 'Failed']);
    expect(done.rollbackStartedAt).toBeGreaterThanOrEqual(failed.at(-1)!.finishedAt);
    expect(failed[0]!.successRate).toBeLessThan(FAST.minSuccessRate);
    expect(done.failureReason).toMatch(/analysis failed 2 times in a row/);
    expect(done.weights).toEqual({ stable: 'v1', canary: null, canaryWeight: 0 });
    expect(await routing.getRoute(acme.id, m.id)).toMatchObject({ stable: 'v1', canary: null });
    await eventually(
      'the canary Deployment to be gone',
      async () => (await api.readDeployment(m.id, 'v2')) === undefined,
    );
    expect((await p.registry.getVersion(acme.id, m.id, 'v2'))?.state).toBe('failed');
    await traffic.stop();
    console.log(
      `canary went bad -> 100% stable in ${toStableMs} ms (analysis interval ${FAST.interval}, failureLimit ${FAST.failureLimit})`,
    );
  });

  it('rolls back a canary whose pods never become ready', async () => {
    const m = await model();
    const res = await api.deploy(
      request(m.id, { readinessTimeout: '4s', canaryMetadata: { annotations: { [BEHAVIOUR]: 'never-ready' } } }),
    );
    const { deploymentId } = res.json();
    const done = await api.untilPhase(deploymentId, 'rolled_back');
    expect(done.failureReason).toMatch(/was not ready within 4 s/);
    expect(done.analyses).toEqual([]);
    expect(await routing.getRoute(acme.id, m.id)).toMatchObject({ stable: 'v1', canary: null });
    await eventually(
      'the canary Deployment to be gone',
      async () => (await api.readDeployment(m.id, 'v2')) === undefined,
    );
    expect((await p.registry.getVersion(acme.id, m.id, 'v2'))?.state).toBe('failed');
  });

  it("refuses a secretRef to a Secret not labelled for the tenant before anything is deployed; the tenant's own one is used", async () => {
    const k = kube();
    const namespace = defaultNamespaceOf(acme.id);
    await k.objects.patch(
      tenantNamespace(namespace),
      undefined,
      undefined,
      'llmhub-test',
      true,
      PatchStrategy.ServerSideApply,
    );
    // What the platform might keep in a tenant namespace, and what the tenant made for itself.
    const platform = uniqueId('platform-s3');
    const own = uniqueId('hf');
    for (const [name, labels] of [
      [platform, {}],
      [own, { [Labels.tenant]: acme.id }],
    ] as const) {
      await k.core.createNamespacedSecret({
        namespace,
        body: { metadata: { name, labels }, stringData: { token: 'x' } },
      });
    }

    const m = await model();
    const foreign = await api.deploy({
      ...request(m.id, { steps: [{ setWeight: 100 }] }),
      env: { HF_TOKEN: { secretRef: { name: platform, key: 'token' } } },
    });
    const refused = await api.untilPhase(foreign.json().deploymentId, 'rolled_back');
    expect(refused.failureReason).toMatch(/Secret '.*' is not labelled llmhub\.dev\/tenant=/);
    expect(await api.readDeployment(m.id, 'v2')).toBeUndefined();

    // The refused rollout marked that v2 failed; a fresh model takes the tenant's own Secret.
    const other = await model();
    const mine = await api.deploy({
      ...request(other.id, { steps: [{ setWeight: 100 }] }),
      env: { HF_TOKEN: { secretRef: { name: own, key: 'token' } } },
    });
    const done = await api.untilPhase(mine.json().deploymentId, 'promoted', 'rolled_back');
    expect({ phase: done.phase, reason: done.failureReason }).toEqual({ phase: 'promoted', reason: null });
  });

  it('waits at an approval gate that only an approver of the tenant opens', async () => {
    const m = await model();
    const res = await api.deploy(
      request(m.id, { steps: [{ setWeight: 20 }, { pause: {} }, { approval: {} }, { setWeight: 60 }] }),
    );
    const { deploymentId, workflowId } = res.json();
    await api.untilPhase(deploymentId, 'paused');
    // A step pause is not a gate: approving it is refused, an operator's resume moves on to the gate.
    expect((await api.steer(deploymentId, 'approve', acme.keys.approver)).statusCode).toBe(409);
    expect((await api.steer(deploymentId, 'resume')).statusCode).toBe(200);
    const gated = await api.untilPhase(deploymentId, 'awaiting_approval');
    expect(gated).toMatchObject({
      pauseReason: 'approval',
      currentStepIndex: 2,
      weights: { canaryWeight: 20 },
      approvals: [],
    });
    const desc = await p.temporal.workflow.getHandle(workflowId).describe();
    expect(desc.typedSearchAttributes.get(PhaseKey)).toBe('awaiting_approval');

    for (const role of ['viewer', 'developer', 'operator'] as const)
      expect({ role, code: (await api.steer(deploymentId, 'approve', acme.keys[role])).statusCode }).toEqual({
        role,
        code: 403,
      });
    expect((await api.steer(deploymentId, 'resume')).statusCode).toBe(409);
    expect((await api.steer(deploymentId, 'promote')).statusCode).toBe(409);
    const other = await p.createTenant('other');
    expect((await api.steer(deploymentId, 'approve', other.keys.approver)).statusCode).toBe(404);
    // The API already scopes ids to the caller's tenant; the workflow's validator refuses another tenant on its own too.
    await expect(
      p.temporal.workflow
        .getHandle(workflowId)
        .executeUpdate(rolloutSteering.approve.update, { args: [{ by: 'intruder', tenantId: other.id }] }),
    ).rejects.toMatchObject({ cause: { message: expect.stringMatching(/another tenant/) } });

    const approved = await api.steer(deploymentId, 'approve', acme.keys.approver);
    expect(approved.statusCode).toBe(200);
    expect(approved.json().approvals).toEqual([expect.objectContaining({ stepIndex: 2, reason: 'test' })]);
    const done = await api.untilPhase(deploymentId, 'promoted', 'rolled_back');
    expect(done.phase).toBe('promoted');
    expect(await routing.getRoute(acme.id, m.id)).toMatchObject({ stable: 'v2', canary: null });
    expect((await api.steer(deploymentId, 'approve', acme.keys.approver)).statusCode).toBe(409);
  });

  it('steers through the API: lock, idempotent start, pause/resume/abort, roles and bad input', async () => {
    const m = await model();
    const body = request(m.id, { steps: [{ setWeight: 10 }, { pause: { duration: '10m' } }] });
    const key = uniqueId('dep');
    const first = await api.deploy(body, key);
    expect(first.statusCode).toBe(202);
    const again = await api.deploy(body, key);
    expect(again.statusCode).toBe(202);
    expect(again.json()).toMatchObject({ deploymentId: key, startedAt: first.json().startedAt });
    const other = await api.deploy(body);
    expect(other.statusCode).toBe(409);
    expect(other.json().error.details).toMatchObject({ deploymentId: key });

    await eventually('the canary at 10%', async () => (await api.status(key)).weights.canaryWeight === 10);
    expect((await api.steer(key, 'pause', acme.keys.viewer)).statusCode).toBe(403);
    const paused = await api.steer(key, 'pause');
    expect(paused.statusCode).toBe(200);
    expect(paused.json().pauseReason).toBe('operator');
    expect((await api.steer(key, 'pause')).statusCode).toBe(409);
    expect((await api.steer(key, 'resume')).json().pauseReason).toBe(null);
    expect((await api.steer(key, 'abort')).statusCode).toBe(200);
    const done = await api.untilPhase(key, 'rolled_back');
    expect(done.failureReason).toMatch(/^aborted by key:/);
    expect(await routing.getRoute(acme.id, m.id)).toMatchObject({ stable: 'v1', canary: null });
    expect((await api.steer(key, 'promote')).statusCode).toBe(409);

    const bad = async (b: object, code: number, field?: string) => {
      const r = await api.deploy(b);
      expect({ code: r.statusCode, field: r.json().error?.details?.field }).toEqual({ code, field });
    };
    await bad({ ...body, modelId: 'no-such-model' }, 404);
    await bad({ ...body, resources: { cpu: -1, gpu: 0 } }, 400, 'body.resources.cpu');
    await bad({ ...body, resources: { cpu: '1', gpu: 1.5 } }, 400, 'body.resources.gpu');
    await bad({ ...body, cluster: 'mars' }, 400, 'body.cluster');
    await bad({ ...body, env: { HF_TOKEN: 'hf_secret' } }, 400, 'body.env.HF_TOKEN');
    // What reaches a tenant's pods: no loader or runtime variables, no prefixed pod metadata the operator did not list.
    await bad({ ...body, env: { LD_PRELOAD: '/tmp/x.so' } }, 400, 'body.env.LD_PRELOAD');
    await bad({ ...body, env: { NODE_OPTIONS: '--require /tmp/x.js' } }, 400, 'body.env.NODE_OPTIONS');
    await bad(
      { ...body, strategy: { canaryMetadata: { annotations: { 'sidecar.istio.io/inject': 'false' } } } },
      400,
      'body.strategy.canaryMetadata.annotations.sidecar.istio.io/inject',
    );
    expect(
      (await p.app.inject({ method: 'GET', url: '/v1/deployments/nope', headers: bearer(acme.keys.viewer) }))
        .statusCode,
    ).toBe(404);
  });
  it('claims serving GPUs from the tenant GPU quota: a deploy past it is refused before anything is applied; promotion and rollback free them', async () => {
    const t = await p.createTenant('gpu');
    const gpuApi = rolloutClient(p, t);
    const setQuota = async (gpus: number) =>
      expect(
        (
          await p.app.inject({
            method: 'PUT',
            url: `/v1/platform/tenants/${t.id}/gpu-quota`,
            headers: bearer(p.operatorKey),
            payload: { gpus },
          })
        ).statusCode,
      ).toBe(200);
    const usage = async () =>
      (await p.app.inject({ method: 'GET', url: '/v1/quotas/gpu', headers: bearer(t.keys.viewer) })).json();
    const version = async (modelId: string, v: string) => {
      const s = await startReferenceModelServer({ name: `${modelId}-${v}` });
      servers.push(s);
      await gpuApi.addVersion(endpoints, modelId, v, s.url);
    };
    const rollout = async (modelId: string, v: string, strategy: object = { steps: [{ setWeight: 100 }] }) => {
      const res = await gpuApi.deploy({
        ...request(modelId, strategy),
        version: v,
        resources: { cpu: '500m', gpu: 1 },
      });
      expect(res.statusCode).toBe(202);
      return gpuApi.untilPhase(res.json().deploymentId, 'promoted', 'rolled_back');
    };
    const a = uniqueId('a');
    const b = uniqueId('b');
    for (const id of [a, b]) await p.registry.createModel(t.id, { id, name: id, description: 'GPU quota' });
    await version(a, 'v1');
    await version(b, 'v1');
    await setQuota(1);

    // Within the quota: the Deployment requests its GPU, and the quota shows serving holding it.
    const first = await rollout(a, 'v1');
    expect({ phase: first.phase, reason: first.failureReason }).toEqual({ phase: 'promoted', reason: null });
    expect((await gpuApi.readDeployment(a, 'v1'))?.spec?.template.spec?.containers[0]?.resources?.limits).toMatchObject(
      { 'nvidia.com/gpu': '1' },
    );
    expect(await usage()).toEqual({
      gpus: 1,
      inUse: 1,
      waiting: 0,
      held: { serving: 1, fineTunes: 0, conversions: 0 },
    });

    // Past it: refused with the reason before anything is applied; the version stays ready to roll out later.
    const refused = await rollout(b, 'v1');
    expect(refused.phase).toBe('rolled_back');
    expect(refused.failureReason).toMatch(
      /^GPU quota exceeded: .*@v1 needs 1 GPU .*quota is 1 GPU, 0 free \(serving holds 1, fine-tunes 0, conversions 0\)/,
    );
    expect(await gpuApi.readDeployment(b, 'v1')).toBeUndefined();
    expect((await p.registry.getVersion(t.id, b, 'v1'))?.state).toBe('ready');

    // A canary needs its GPU beside the stable's; promotion scales the old stable to 0 and frees its GPU.
    await setQuota(2);
    await version(a, 'v2');
    expect((await rollout(a, 'v2')).phase).toBe('promoted');
    expect((await gpuApi.readDeployment(a, 'v1'))?.spec?.replicas).toBe(0);
    expect((await usage()).held).toEqual({ serving: 1, fineTunes: 0, conversions: 0 });
    const retried = await rollout(b, 'v1');
    expect({ phase: retried.phase, reason: retried.failureReason }).toEqual({ phase: 'promoted', reason: null });
    expect((await usage()).held.serving).toBe(2);

    // A rolled-back canary's Deployment is deleted and its GPU freed.
    await setQuota(3);
    await version(b, 'v2');
    const failed = await rollout(b, 'v2', {
      steps: [{ setWeight: 100 }],
      readinessTimeout: '4s',
      canaryMetadata: { annotations: { [BEHAVIOUR]: 'never-ready' } },
    });
    expect(failed.phase).toBe('rolled_back');
    expect(failed.failureReason).toMatch(/was not ready within 4 s/);
    expect(await usage()).toMatchObject({ gpus: 3, inUse: 2, held: { serving: 2 } });
  });
});
