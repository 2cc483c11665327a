import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { RoutingStore } from '../../common/store/routing';
import { KUBECONFIG_ENV } from '../../deploy/dev/kube/cluster';
import { startReferenceModelServer, type ReferenceModelServer } from '../../deploy/dev/model-server/server';
import type { ManagedProcess } from '../../deploy/dev/process';
import { serveModel } from '../support/gateway';
import {
  eventually,
  startTestPlatform,
  startWorkerProcess,
  uniqueId,
  type TestPlatform,
  type TestTenant,
} from '../support/platform';
import { rolloutClient, rolloutRequest } from '../support/rollout';

let p: TestPlatform;
let acme: TestTenant;
let api: ReturnType<typeof rolloutClient>;
let worker: ManagedProcess | undefined;
const servers: ReferenceModelServer[] = [];
const modelId = uniqueId('m');
/** Version → local reference server; a worker process reads it from LLMHUB_LOCAL_ENDPOINTS at start. */
const endpoints = new Map<string, string>();

/**
 * The alert webhook, the rollback's second-to-last step (after traffic, cluster and registry, before the lock).
 * It refuses alerts until the test lets it through, so the first worker cannot finish the rollback and the kill
 * lands mid-rollback every time, without timing.
 */
const alerts = { accept: false, refused: 0, received: [] as { kind: string; reason: string }[] };
let webhook: Server;
/** PendingActivityState.PENDING_ACTIVITY_STATE_SCHEDULED: waiting for its next attempt (@temporalio/proto is no direct dependency). */
const SCHEDULED = 1;

const startWorker = () =>
  startWorkerProcess(p, {
    KUBECONFIG: process.env[KUBECONFIG_ENV],
    LLMHUB_LOCAL_ENDPOINTS: JSON.stringify(Object.fromEntries(endpoints)),
    ROLLOUT_ALERT_WEBHOOK: `http://127.0.0.1:${(webhook.address() as AddressInfo).port}/alerts`,
  });

beforeAll(async () => {
  p = await startTestPlatform({ worker: false });
  acme = await p.createTenant('crash');
  api = rolloutClient(p, acme);
  webhook = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (!alerts.accept) {
        alerts.refused++;
        res.writeHead(503).end();
        return;
      }
      alerts.received.push(JSON.parse(Buffer.concat(chunks).toString()));
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((resolve) => webhook.listen(0, '127.0.0.1', resolve));
  for (const v of ['v1', 'v2', 'v3']) servers.push(await startReferenceModelServer({ name: `${modelId}-${v}` }));
  await serveModel(p.db, acme.id, modelId, { v1: servers[0]!.url }, { stable: 'v1' });
  await api.addVersion(endpoints, modelId, 'v2', servers[1]!.url);
  await api.addVersion(endpoints, modelId, 'v3', servers[2]!.url);
  worker = await startWorker();
});
afterAll(async () => {
  await worker?.stop();
  await p?.close();
  await Promise.all(servers.map((s) => s.close()));
  await new Promise((resolve) => webhook?.close(resolve));
});

describe('rollout survives a worker crash', () => {
  it('completes a rollback cut short by SIGKILL on a new worker: stable 100 %, canary gone, version failed, lock released', async () => {
    const routing = new RoutingStore(p.db);
    const res = await api.deploy(rolloutRequest(modelId, { steps: [{ setWeight: 50 }, { pause: {} }] }));
    expect(res.statusCode).toBe(202);
    const { deploymentId, workflowId } = res.json();
    await api.untilPhase(deploymentId, 'paused');
    expect(await api.readDeployment(modelId, 'v2')).toBeDefined();
    expect((await api.steer(deploymentId, 'abort')).statusCode).toBe(200);
    expect((await api.untilPhase(deploymentId, 'rolling_back')).rollbackStartedAt).not.toBeNull();
    // Killed while the refused alert waits for its retry (its 1 s backoff), not during an attempt: a lost attempt
    // would only be retried after its 1-minute start-to-close timeout, which makes the test slow, not wrong.
    await eventually('the rollback alert to wait for a retry', async () => {
      const { raw } = await p.temporal.workflow.getHandle(workflowId).describe();
      return raw.pendingActivities?.some(
        (a) => a.activityType?.name === 'emitRolloutAlert' && (a.attempt ?? 0) >= 2 && a.state === SCHEDULED,
      );
    });
    expect(alerts.refused).toBeGreaterThan(0);
    process.kill(worker!.pid, 'SIGKILL');
    await worker!.stop();

    // Killed mid-rollback: the steps before the alert are done, the lock is still held.
    expect(await routing.getRoute(acme.id, modelId)).toMatchObject({ stable: 'v1', canary: null });
    expect((await api.deploy({ ...rolloutRequest(modelId, {}), version: 'v3' })).statusCode).toBe(409);

    alerts.accept = true;
    worker = await startWorker();
    const done = await api.untilPhase(deploymentId, 'rolled_back');
    expect(done).toMatchObject({
      weights: { stable: 'v1', canary: null, canaryWeight: 0 },
      failureReason: expect.stringMatching(/^aborted by key:/),
    });
    expect(alerts.received).toEqual([expect.objectContaining({ kind: 'rollout_rolled_back', reason: 'aborted' })]);
    expect(await routing.getRoute(acme.id, modelId)).toMatchObject({ stable: 'v1', canary: null, canaryWeight: 0 });
    await eventually(
      'the canary Deployment and Service to be gone',
      async () =>
        (await api.readDeployment(modelId, 'v2')) === undefined && (await api.readService(modelId, 'v2')) === undefined,
    );
    expect((await p.registry.getVersion(acme.id, modelId, 'v2'))?.state).toBe('failed');

    // The lock is free: the next version's rollout is accepted (and aborted, so no run outlives the test).
    const next = await api.deploy({ ...rolloutRequest(modelId, { steps: [{ pause: {} }] }), version: 'v3' });
    expect(next.statusCode).toBe(202);
    await api.untilPhase(next.json().deploymentId, 'paused');
    expect((await api.steer(next.json().deploymentId, 'abort')).statusCode).toBe(200);
    await api.untilPhase(next.json().deploymentId, 'rolled_back');
  });
});
