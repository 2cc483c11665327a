import { createHash } from 'node:crypto';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { Worker } from '@temporalio/worker';
import { startTracing, type Tracing } from '../../common/tracing';
import { startReferenceModelServer, type ReferenceModelServer } from '../../deploy/dev/model-server/server';
import { collectedSpans, startLocalCollector, type CollectedSpan, type LocalCollector } from '../../deploy/dev/otel';
import { serveModel, untilRouted } from '../support/gateway';
import {
  bearer,
  eventually,
  startTestPlatform,
  uniqueId,
  type TestPlatform,
  type TestTenant,
} from '../support/platform';

const SERVER = 2;
const CLIENT = 3;
let collector: LocalCollector;
let tracing: Tracing;
let p: TestPlatform;
let acme: TestTenant;
let upstream: ReferenceModelServer;

beforeAll(async () => {
  collector = await startLocalCollector({ dataDir: path.join(process.env.LLMHUB_TEST_DATA!, uniqueId('otel')) });
  // As OTEL_EXPORTER_OTLP_ENDPOINT makes the processes do; the app, client and worker run in this one process.
  tracing = startTracing({ endpoint: collector.endpoint, serviceName: 'llmhub-test' })!;
  p = await startTestPlatform({ tracing, gateway: { refreshMs: 500 } });
  upstream = await startReferenceModelServer({ name: 'traced' });
  acme = await p.createTenant('acme');
});
afterAll(async () => {
  await p?.close();
  await upstream?.close();
  await tracing?.shutdown();
  await collector?.stop();
});

/** The trace's spans once `complete` holds for them (spans arrive batch by batch, the workflow's through a sink). */
const traceOf = (traceId: string, complete: (spans: CollectedSpan[]) => boolean) =>
  eventually(`trace ${traceId} in the collector's file`, async () => {
    await tracing.flush();
    const spans = (await collectedSpans(collector.file)).filter((s) => s.traceId === traceId);
    return complete(spans) && spans;
  });

const only = (spans: CollectedSpan[], test: (s: CollectedSpan) => boolean, what: string): CollectedSpan => {
  const found = spans.filter(test);
  expect({ what, count: found.length }).toEqual({ what, count: 1 });
  return found[0]!;
};

describe('traces', () => {
  it('follows an API call through the workflow it starts to the workflow and its activities, in one trace', async () => {
    const modelId = uniqueId('traced');
    const created = await p.app.inject({
      method: 'POST',
      url: '/v1/models',
      headers: bearer(acme.keys.developer),
      payload: { id: modelId, name: modelId },
    });
    expect(created.statusCode).toBe(201);
    const content = 'weights-'.repeat(100);
    const key = `${uniqueId('artifact')}/model.safetensors`;
    await p.objects.put({ bucket: acme.bucket, key }, content);
    const res = await p.app.inject({
      method: 'POST',
      url: `/v1/models/${modelId}/versions`,
      headers: { ...bearer(acme.keys.developer), 'idempotency-key': uniqueId('k') },
      payload: { version: '1.0.0', artifactUri: `s3://${acme.bucket}/${key}` },
    });
    expect(res.statusCode).toBe(202);
    const handle = p.temporal.workflow.getHandle(res.json().workflowId);
    await handle.result();
    // A run traced by one worker replays on a worker without the interceptors (tracing switched off mid-flight).
    await Worker.runReplayHistory(
      { workflowBundle: { codePath: process.env.LLMHUB_WORKFLOW_BUNDLE! } },
      await handle.fetchHistory(),
      handle.workflowId,
    );

    // The X-Trace-ID answered is the trace's id.
    const traceId = String(res.headers['x-trace-id']);
    expect(traceId).toMatch(/^[0-9a-f]{32}$/);
    const spans = await traceOf(
      traceId,
      (s) => s.some((x) => x.name.startsWith('RunActivity:')) && s.some((x) => x.name.startsWith('RunWorkflow:')),
    );

    const api = only(spans, (s) => s.kind === SERVER, 'the API request span');
    expect(api).toMatchObject({
      name: 'POST /v1/models/:modelId/versions',
      parentSpanId: undefined,
      service: 'llmhub-test',
      attributes: { 'http.route': '/v1/models/:modelId/versions', 'http.response.status_code': '202' },
    });
    const start = only(spans, (s) => s.name.startsWith('StartWorkflow:'), 'the workflow start');
    expect(start.parentSpanId).toBe(api.spanId);
    const workflowType = start.name.slice('StartWorkflow:'.length);
    const run = only(spans, (s) => s.name === `RunWorkflow:${workflowType}`, 'the workflow run');
    expect(run.parentSpanId).toBe(start.spanId);
    // Every activity the workflow scheduled ran as a child of its scheduling, under the workflow's run.
    const scheduled = spans.filter((s) => s.name.startsWith('StartActivity:'));
    expect(scheduled.length).toBeGreaterThan(0);
    for (const s of scheduled) expect(s.parentSpanId).toBe(run.spanId);
    const ran = spans.filter((s) => s.name.startsWith('RunActivity:'));
    expect(ran.length).toBeGreaterThan(0);
    for (const r of ran) {
      const parent = scheduled.find((s) => s.spanId === r.parentSpanId);
      expect(parent?.name.replace('StartActivity:', '')).toBe(r.name.replace('RunActivity:', ''));
    }
  });

  it('follows an inference call through the gateway to the model server, which receives the trace context', async () => {
    const model = uniqueId('chat');
    await serveModel(p.db, acme.id, model, { '1.0': upstream.url }, { stable: '1.0' });
    await untilRouted(p.app, acme.keys.developer, model);
    const res = await p.app.inject({
      method: 'POST',
      url: '/v1/chat/completions',
      headers: { ...bearer(acme.keys.developer), 'content-type': 'application/json' },
      payload: { model, messages: [{ role: 'user', content: 'hello' }] },
    });
    expect(res.statusCode).toBe(200);
    const traceId = String(res.headers['x-trace-id']);
    expect(traceId).toMatch(/^[0-9a-f]{32}$/);

    const spans = await traceOf(traceId, (s) => s.some((x) => x.kind === SERVER) && s.some((x) => x.kind === CLIENT));
    const gateway = only(spans, (s) => s.kind === SERVER, 'the gateway request span');
    expect(gateway).toMatchObject({ name: 'POST /v1/chat/completions', parentSpanId: undefined });
    const call = only(spans, (s) => s.kind === CLIENT, 'the upstream call span');
    expect(call).toMatchObject({
      parentSpanId: gateway.spanId,
      attributes: { 'url.full': `${upstream.url}/chat/completions`, 'llmhub.model_version': '1.0' },
    });
    // The model server got W3C trace context naming the upstream call's span, and the request id as before.
    const received = upstream.requests.find((r) => r.headers['x-trace-id'] === traceId);
    expect(received?.headers.traceparent).toBe(`00-${traceId}-${call.spanId}-01`);
  });

  it("continues a caller's trace, and keeps a caller's X-Trace-ID as the request id", async () => {
    const parentTrace = createHash('sha256').update(uniqueId('caller')).digest('hex').slice(0, 32);
    const continued = await p.app.inject({
      method: 'GET',
      url: '/v1/models',
      headers: { ...bearer(acme.keys.viewer), traceparent: `00-${parentTrace}-00f067aa0ba902b7-01` },
    });
    expect(continued.headers['x-trace-id']).toBe(parentTrace);
    const [span] = await traceOf(parentTrace, (s) => s.length > 0);
    expect(span).toMatchObject({ parentSpanId: '00f067aa0ba902b7', name: 'GET /v1/models' });

    // Probes are not traced: their id is not a trace id.
    const probe = await p.app.inject({ method: 'GET', url: '/healthz' });
    expect(probe.headers['x-trace-id']).toMatch(/^[0-9a-f]{8}-/);

    const requestId = uniqueId('given');
    const given = await p.app.inject({
      method: 'GET',
      url: '/v1/models',
      headers: { ...bearer(acme.keys.viewer), 'x-trace-id': requestId },
    });
    expect(given.headers['x-trace-id']).toBe(requestId);
    await eventually('the span carrying the given request id', async () => {
      await tracing.flush();
      return (await collectedSpans(collector.file)).some((s) => s.attributes['llmhub.request_id'] === requestId);
    });
  });
});
