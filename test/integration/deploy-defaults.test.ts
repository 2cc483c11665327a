import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { defaultPayloadConverter } from '@temporalio/common';
import { defaultSteps, DEFAULT_ANALYSIS, type RolloutInput } from '../../contracts/rollout';
import { bearer, startTestPlatform, uniqueId, type TestPlatform, type TestTenant } from '../support/platform';
import { rolloutClient } from '../support/rollout';

/**
 * The seed's minimal deploy body and the defaults that fill it. No worker runs: what is checked is the 202 answer
 * and the input the rollout workflow was started with, which is what its GPU claim and its Deployment are made from.
 */
let p: TestPlatform;
let acme: TestTenant;
let api: ReturnType<typeof rolloutClient>;
const savedClusters = process.env.LLMHUB_CLUSTERS;

beforeAll(async () => {
  // Configuration, not a test override: the API reads each cluster's defaultResources from it.
  process.env.LLMHUB_CLUSTERS = JSON.stringify({
    local: { defaultResources: { cpu: '2', memory: '8Gi' } },
    bare: {},
  });
  p = await startTestPlatform({ worker: false });
  acme = await p.createTenant('acme');
  api = rolloutClient(p, acme);
});
afterAll(async () => {
  await p?.close();
  process.env.LLMHUB_CLUSTERS = savedClusters;
});

/** A model with ready versions v1 and v2, created through the API with the metadata given. */
async function model(metadata: object = {}) {
  const id = uniqueId('m');
  const res = await p.app.inject({
    method: 'POST',
    url: '/v1/models',
    headers: bearer(acme.keys.developer),
    payload: { id, name: id, ...metadata },
  });
  expect(res.statusCode).toBe(201);
  for (const version of ['v1', 'v2']) await api.addVersion(new Map(), id, version, 'http://127.0.0.1:9/v1');
  return id;
}

async function inputOf(workflowId: string): Promise<RolloutInput> {
  const history = await p.temporal.workflow.getHandle(workflowId).fetchHistory();
  const payload = history.events?.[0]?.workflowExecutionStartedEventAttributes?.input?.payloads?.[0];
  return defaultPayloadConverter.fromPayload(payload!);
}

async function deployed(body: object) {
  const res = await api.deploy(body);
  expect(res.statusCode).toBe(202);
  const answer = res.json();
  return { answer, input: await inputOf(answer.workflowId) };
}

describe('POST /v1/deploy defaults', () => {
  it("accepts the seed's minimal body: the model's resources, the newest ready version, the default strategy", async () => {
    const id = await model({ type: 'chat', resources: { cpu: 4, gpu: 1, memory: '24Gi' } });
    const { answer, input } = await deployed({ modelId: id, cluster: 'local' });
    expect(answer).toEqual({
      deploymentId: expect.any(String),
      workflowId: expect.any(String),
      status: 'running',
      startedAt: expect.any(String),
      statusUrl: `/v1/deployments/${answer.deploymentId}`,
    });
    expect(Number.isNaN(Date.parse(answer.startedAt))).toBe(false);
    expect(input).toMatchObject({
      tenantId: acme.id,
      modelId: id,
      version: 'v2',
      deploymentId: answer.deploymentId,
      cluster: 'local',
      resources: { cpu: '4', gpu: 1, memory: '24Gi' },
      env: {},
      strategy: {
        steps: defaultSteps('1m'),
        analysis: DEFAULT_ANALYSIS,
        readinessTimeout: '15m',
        canaryMetadata: { annotations: {}, labels: {} },
      },
    });
  });

  it("uses the cluster's default resources for a model without any, over the platform's for what it leaves out", async () => {
    const { input } = await deployed({ modelId: await model(), cluster: 'local' });
    expect(input.resources).toEqual({ cpu: '2', gpu: 0, memory: '8Gi' });
  });

  it("uses the platform's default resources on a cluster that names none", async () => {
    const { input } = await deployed({ modelId: await model(), cluster: 'bare' });
    expect(input.resources).toEqual({ cpu: '1', gpu: 0, memory: '4Gi' });
  });

  it("takes the body's resources over the model's", async () => {
    const id = await model({ resources: { cpu: 4, gpu: 2 } });
    const { input } = await deployed({
      modelId: id,
      cluster: 'bare',
      version: 'v1',
      resources: { cpu: '500m', gpu: 0 },
    });
    expect(input).toMatchObject({ version: 'v1', resources: { cpu: '500m', gpu: 0, memory: '16Gi' } });
  });

  it('still refuses an unknown cluster, naming the field', async () => {
    const res = await api.deploy({ modelId: await model(), cluster: 'nowhere' });
    expect(res.statusCode).toBe(400);
    expect(res.json().error.details.field).toBe('body.cluster');
  });
});
