import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { AuditStore, type AuditRow } from '../../common/store/audit';
import { KnowledgeStore } from '../../common/store/knowledge';
import { freePort } from '../../deploy/dev/process';
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

const MODEL = uniqueId('audited');
const SLOW_MODEL = uniqueId('audited-slow');
const NS = 'audit-ns';

let p: TestPlatform;
let acme: TestTenant;
let other: TestTenant;
let fast: ReferenceModelServer;
let slow: ReferenceModelServer;
let base: string;
const startedAt = new Date(Date.now() - 1000).toISOString();

beforeAll(async () => {
  // Agent runs call models through this API over HTTP, so it listens on a port known before it starts.
  const port = await freePort();
  p = await startTestPlatform({
    gateway: { auditFlushMs: 100 },
    activityDeps: { gatewayUrl: `http://127.0.0.1:${port}` },
  });
  base = await p.app.listen({ host: '127.0.0.1', port });
  [fast, slow] = await Promise.all([
    startReferenceModelServer({ name: 'fast' }),
    startReferenceModelServer({ name: 'slow', faults: { replyTokens: 50, tokenIntervalMs: 100 } }),
  ]);
  acme = await p.createTenant('acme');
  other = await p.createTenant('other');
  await serveModel(p.db, acme.id, MODEL, { v1: fast.url }, { stable: 'v1' });
  await serveModel(p.db, acme.id, SLOW_MODEL, { v1: slow.url }, { stable: 'v1' });
  await untilRouted(p.app, acme.keys.developer, MODEL);
  await untilRouted(p.app, acme.keys.developer, SLOW_MODEL);
});
afterAll(async () => {
  await p?.close();
  await Promise.all([fast, slow].map((s) => s?.close()));
});

const chat = (traceId: string, model: string, content: string, stream: boolean) =>
  fetch(`${base}/v1/chat/completions`, {
    method: 'POST',
    headers: { ...bearer(acme.keys.developer), 'content-type': 'application/json', 'x-trace-id': traceId },
    body: JSON.stringify({
      model,
      messages: [{ role: 'user', content }],
      stream,
      ...(stream ? { stream_options: { include_usage: true } } : {}),
    }),
  });

const auditQuery = (key: string, query: Record<string, string | number>, path = '/v1/audit') =>
  p.app.inject({
    method: 'GET',
    url: path,
    query: Object.fromEntries(Object.entries(query).map(([k, v]) => [k, String(v)])),
    headers: bearer(key),
  });

/** The rows an admin of acme finds for the filter, once there are `count` (buffered rows are written asynchronously). */
const rowsOf = (query: Record<string, string | number>, count = 1) =>
  eventually(`${count} audit row(s) for ${JSON.stringify(query)}`, async () => {
    const res = await auditQuery(acme.keys.admin, query);
    expect(res.statusCode).toBe(200);
    const rows = res.json().data as AuditRow[];
    return rows.length >= count ? rows : undefined;
  });

describe('one audit row per call', () => {
  it('a plain chat: status, bytes, duration, model, version and tokens', async () => {
    const traceId = uniqueId('plain');
    const res = await chat(traceId, MODEL, 'hello there', false);
    expect(res.status).toBe(200);
    const body = await res.text();
    const [row] = await rowsOf({ requestId: traceId });
    expect(row).toMatchObject({
      tenantId: acme.id,
      method: 'POST',
      route: '/v1/chat/completions',
      statusCode: 200,
      disconnected: false,
      bytesSent: Buffer.byteLength(body),
      model: MODEL,
      modelVersion: 'v1',
      promptTokens: 3,
      completionTokens: 5,
      errorClass: null,
    });
    expect(row!.durationMs).toBeGreaterThan(0);
    expect(row!.principal).toMatch(/^key:/);
  });

  it('a model name holding a NUL is a 400 with its row, and rows after it are still written', async () => {
    // Before, the name went into the row: PostgreSQL refused the buffered INSERT for it, and the buffer, retrying it,
    // wrote no row of this replica again.
    const refused = uniqueId('nul-model');
    const res = await chat(refused, 'a\u0000b', 'hi', false);
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ error: { param: 'model', code: 'invalid_request' } });
    const after = uniqueId('after-nul');
    expect((await chat(after, MODEL, 'hi', false)).status).toBe(200);
    expect((await rowsOf({ requestId: refused }))[0]).toMatchObject({ statusCode: 400, model: null });
    expect((await rowsOf({ requestId: after }))[0]).toMatchObject({ statusCode: 200, model: MODEL });
  });

  it('the store takes any text: a NUL or an unpaired surrogate is replaced, the other rows of the statement kept', async () => {
    const kept = ['ab', 'a\\u0000b', 'a\\\\ud800b', 'a\ud83d\ude00b', 'tab\tquote"'];
    const replaced = ['a\u0000b', 'a\ud800b', 'a\udfffb', 'a\\\u0000b', 'end\udbff'];
    const models = [...replaced, ...kept];
    const ids = models.map((_, i) => uniqueId(`text-row-${i}`));
    const row = (requestId: string, model: string) => ({
      requestId,
      tenantId: acme.id,
      method: 'POST',
      route: '/v1/chat/completions',
      url: '/v1/chat/completions',
      statusCode: 200,
      model,
    });
    await new AuditStore(p.db).insert(ids.map((id, i) => row(id, models[i]!)));
    const stored = [];
    for (const id of ids) stored.push((await rowsOf({ requestId: id }))[0]!.model);
    expect(stored).toEqual([
      ...['a\ufffdb', 'a\ufffdb', 'a\ufffdb', 'a\\\ufffdb', 'end\ufffd'],
      // Backslashes before `u0000` or `ud800` are text, not an escape; a surrogate pair is a character.
      ...kept,
    ]);
  });

  it('a streamed chat: the row is written after [DONE], with the tokens of the stream', async () => {
    const traceId = uniqueId('stream');
    const res = await chat(traceId, MODEL, 'count one two three', true);
    const text = await res.text();
    expect(text.trimEnd().endsWith('data: [DONE]')).toBe(true);
    const [row] = await rowsOf({ requestId: traceId });
    expect(row).toMatchObject({
      statusCode: 200,
      disconnected: false,
      bytesSent: Buffer.byteLength(text),
      model: MODEL,
      modelVersion: 'v1',
      promptTokens: 5,
      completionTokens: 7,
    });
  });

  it('a client that disconnects mid-stream is recorded as disconnected', async () => {
    const traceId = uniqueId('gone');
    const abort = new AbortController();
    const res = await fetch(`${base}/v1/chat/completions`, {
      method: 'POST',
      signal: abort.signal,
      headers: { ...bearer(acme.keys.developer), 'content-type': 'application/json', 'x-trace-id': traceId },
      body: JSON.stringify({ model: SLOW_MODEL, messages: [{ role: 'user', content: 'go' }], stream: true }),
    });
    expect(res.status).toBe(200);
    const reader = res.body!.getReader();
    const first = await reader.read();
    expect(first.done).toBe(false);
    abort.abort();
    const [row] = await rowsOf({ requestId: traceId });
    expect(row).toMatchObject({ statusCode: 200, disconnected: true, model: SLOW_MODEL, modelVersion: 'v1' });
    expect(row!.bytesSent).toBeGreaterThan(0);
  });

  it('a streamed RAG chat: a row for the chat route and one for its model call, under one request id', async () => {
    await new KnowledgeStore(p.db).ensureNamespace(
      acme.id,
      NS,
      'default',
      uniqueId('audit_collection').replace(/-/g, '_'),
    );
    const traceId = uniqueId('rag');
    const res = await fetch(`${base}/v1/knowledge/${NS}/chat`, {
      method: 'POST',
      headers: { ...bearer(acme.keys.developer), 'content-type': 'application/json', 'x-trace-id': traceId },
      body: JSON.stringify({ model: MODEL, question: 'what is in here', stream: true }),
    });
    expect(res.status).toBe(200);
    const text = await res.text();
    expect(text.trimEnd().endsWith('data: [DONE]')).toBe(true);
    const [outer] = await rowsOf({ requestId: traceId, route: '/v1/knowledge/:namespace/chat' });
    expect(outer).toMatchObject({ statusCode: 200, disconnected: false, bytesSent: Buffer.byteLength(text) });
    const [inner] = await rowsOf({ requestId: traceId, route: '/v1/chat/completions' });
    expect(inner).toMatchObject({ statusCode: 200, model: MODEL, modelVersion: 'v1' });
    expect(inner!.completionTokens).toBeGreaterThan(0);
  });

  it("an agent run's event stream, found by the run's workflow id", async () => {
    const agent = await p.app.inject({
      method: 'PUT',
      url: '/v1/agents/audited',
      headers: bearer(acme.keys.developer),
      payload: { model: MODEL, systemPrompt: 'Answer briefly.', tools: [] },
    });
    expect(agent.statusCode).toBe(200);
    const start = await p.app.inject({
      method: 'POST',
      url: '/v1/agent-runs',
      headers: bearer(acme.keys.developer),
      payload: { agentId: 'audited', input: 'hello' },
    });
    expect(start.statusCode).toBe(202);
    const { runId, workflowId } = start.json();
    const traceId = uniqueId('events');
    const res = await fetch(`${base}/v1/agent-runs/${runId}/events`, {
      headers: { ...bearer(acme.keys.viewer), 'x-trace-id': traceId },
    });
    const text = await res.text();
    expect(text).toMatch(/event: end\n/);
    const [row] = await rowsOf({ workflowId, route: '/v1/agent-runs/:id/events' });
    expect(row).toMatchObject({
      requestId: traceId,
      statusCode: 200,
      disconnected: false,
      bytesSent: Buffer.byteLength(text),
      role: 'viewer',
    });
  });

  it('a control call has its row before the answer arrives', async () => {
    const traceId = uniqueId('control');
    const res = await p.app.inject({
      method: 'GET',
      url: '/v1/models',
      headers: { ...bearer(acme.keys.viewer), 'x-trace-id': traceId },
    });
    expect(res.statusCode).toBe(200);
    expect(await new AuditStore(p.db).byRequestId(traceId)).toMatchObject({ statusCode: 200, route: '/v1/models' });
  });

  it('counts calls without valid credentials per source address and minute, with no row each', async () => {
    const ip = `198.51.100.${Math.floor(Math.random() * 250) + 1}`;
    const traceIds = [uniqueId('anon'), uniqueId('anon')];
    for (const [i, traceId] of traceIds.entries()) {
      const res = await p.app.inject({
        method: 'GET',
        url: '/v1/models',
        remoteAddress: ip,
        headers: { 'x-trace-id': traceId, ...(i ? bearer(`llmhub_0000000000000000_${'x'.repeat(43)}`) : {}) },
      });
      expect(res.statusCode).toBe(401);
    }
    const counted = await eventually('the unauthenticated count', async () => {
      const res = await auditQuery(p.operatorKey, { ip }, '/v1/platform/audit/unauthenticated');
      expect(res.statusCode).toBe(200);
      const data = res.json().data as { count: number }[];
      return data.length && data.reduce((n, c) => n + c.count, 0) >= 2 ? data : undefined;
    });
    expect(counted.reduce((n, c) => n + c.count, 0)).toBe(2);
    for (const traceId of traceIds) expect(await new AuditStore(p.db).byRequestId(traceId)).toBeUndefined();
  });
});

describe('GET /v1/audit', () => {
  it('filters by route, status, principal, workflow and time, and pages with an opaque cursor', async () => {
    const traceIds = [uniqueId('page'), uniqueId('page'), uniqueId('page')];
    for (const t of traceIds) expect((await chat(t, MODEL, 'page me', false)).status).toBe(200);
    for (const t of traceIds) await rowsOf({ requestId: t });
    const [one] = await rowsOf({ requestId: traceIds[0]! });
    const filters = { route: '/v1/chat/completions', status: 200, principal: one!.principal!, from: startedAt };
    const first = await auditQuery(acme.keys.admin, { ...filters, limit: 2 });
    expect(first.statusCode).toBe(200);
    expect(first.json().data).toHaveLength(2);
    expect(first.json().nextCursor).toEqual(expect.any(String));
    const second = await auditQuery(acme.keys.admin, { ...filters, limit: 2, cursor: first.json().nextCursor });
    expect(second.statusCode).toBe(200);
    const seen = [...first.json().data, ...second.json().data].map((r: AuditRow) => r.id);
    expect(new Set(seen).size).toBe(seen.length);
    // Newest first, across pages.
    const ats = [...first.json().data, ...second.json().data].map((r: AuditRow) => r.at);
    expect([...ats].sort().reverse()).toEqual(ats);
    for (const row of [...first.json().data, ...second.json().data] as AuditRow[])
      expect(row).toMatchObject({ tenantId: acme.id, route: '/v1/chat/completions', statusCode: 200 });

    const none = await auditQuery(acme.keys.admin, {
      requestId: traceIds[0]!,
      from: new Date(Date.now() + 3_600_000).toISOString(),
    });
    expect(none.json().data).toEqual([]);
    const earlier = await auditQuery(acme.keys.admin, { requestId: traceIds[0]!, to: startedAt });
    expect(earlier.json().data).toEqual([]);
    const byStatus = await auditQuery(acme.keys.admin, { requestId: traceIds[0]!, status: 404 });
    expect(byStatus.json().data).toEqual([]);
    // RFC 3339 times PostgreSQL cannot hold as written (an offset past ±15:59, year 1 moved into year 0 by its offset)
    // are the instants they name; a schemathesis run found the year-0 one answered 400.
    const edge = await auditQuery(acme.keys.admin, {
      requestId: traceIds[0]!,
      from: '0001-01-01T00:00:00+23:09',
      to: '9999-12-31T23:59:59-23:59',
    });
    expect(edge.statusCode).toBe(200);
    expect(edge.json().data).toHaveLength(1);
  });

  it('refuses a bad cursor, a limit over the maximum and unknown filters, naming the field', async () => {
    const cursor = await auditQuery(acme.keys.admin, { cursor: 'not-a-cursor' });
    expect(cursor.statusCode).toBe(400);
    expect(cursor.json().error.details.field).toBe('querystring.cursor');
    expect((await auditQuery(acme.keys.admin, { limit: 1001 })).statusCode).toBe(400);
    expect((await auditQuery(acme.keys.admin, { tenant: other.id })).statusCode).toBe(400);
  });

  it("is for the tenant's admins: another tenant's admin sees none of its rows, a developer is refused", async () => {
    const traceId = uniqueId('isolated');
    expect((await chat(traceId, MODEL, 'mine', false)).status).toBe(200);
    await rowsOf({ requestId: traceId });
    const rival = await auditQuery(other.keys.admin, { requestId: traceId });
    expect(rival.statusCode).toBe(200);
    expect(rival.json().data).toEqual([]);
    const all = await auditQuery(other.keys.admin, { limit: 1000 });
    expect((all.json().data as AuditRow[]).filter((r) => r.tenantId !== other.id)).toEqual([]);
    const rivalExport = await p.app.inject({
      method: 'GET',
      url: `/v1/audit/export?route=/v1/chat/completions`,
      headers: bearer(other.keys.admin),
    });
    expect(rivalExport.body).not.toContain(acme.id);
    expect((await auditQuery(acme.keys.developer, { requestId: traceId })).statusCode).toBe(403);
    expect((await auditQuery(p.operatorKey, { requestId: traceId })).statusCode).toBe(403);
    expect((await auditQuery(acme.keys.admin, { requestId: traceId }, '/v1/platform/audit')).statusCode).toBe(403);
  });

  it('a platform operator sees every tenant, narrowed by tenant', async () => {
    const traceId = uniqueId('operator-view');
    expect((await chat(traceId, MODEL, 'for the operator', false)).status).toBe(200);
    await rowsOf({ requestId: traceId });
    const all = await auditQuery(p.operatorKey, { requestId: traceId }, '/v1/platform/audit');
    expect(all.statusCode).toBe(200);
    expect(all.json().data).toEqual([expect.objectContaining({ tenantId: acme.id, requestId: traceId })]);
    const mine = await auditQuery(p.operatorKey, { requestId: traceId, tenant: acme.id }, '/v1/platform/audit');
    expect(mine.json().data).toHaveLength(1);
    const theirs = await auditQuery(p.operatorKey, { requestId: traceId, tenant: other.id }, '/v1/platform/audit');
    expect(theirs.json().data).toEqual([]);
  });

  it('exports NDJSON, and the export is itself audited', async () => {
    const traceId = uniqueId('exported');
    expect((await chat(traceId, MODEL, 'export me', false)).status).toBe(200);
    await rowsOf({ requestId: traceId });
    const exportId = uniqueId('export');
    const res = await fetch(`${base}/v1/audit/export?requestId=${traceId}`, {
      headers: { ...bearer(acme.keys.admin), 'x-trace-id': exportId },
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/x-ndjson');
    const lines = (await res.text())
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as AuditRow);
    expect(lines).toEqual([expect.objectContaining({ requestId: traceId, model: MODEL, tenantId: acme.id })]);
    const [row] = await rowsOf({ requestId: exportId });
    expect(row).toMatchObject({ route: '/v1/audit/export', statusCode: 200, disconnected: false });
    const operator = await p.app.inject({
      method: 'GET',
      url: `/v1/platform/audit/export?requestId=${traceId}`,
      headers: bearer(p.operatorKey),
    });
    expect(
      operator.body
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l).requestId),
    ).toEqual([traceId]);
  });
});

describe('retention', () => {
  it('deletes rows and unauthenticated counts older than the cutoff, and keeps the rest', async () => {
    const store = new AuditStore(p.db);
    const day = 24 * 3_600_000;
    const [old, recent] = [uniqueId('old'), uniqueId('recent')];
    const ip = `192.0.2.${Math.floor(Math.random() * 250) + 1}`;
    const at = (daysAgo: number) => Date.now() - daysAgo * day;
    const entry = { tenantId: acme.id, method: 'GET', route: '/v1/models', url: '/v1/models', statusCode: 200 };
    await store.insert([
      { ...entry, requestId: old, at: at(400) },
      { ...entry, requestId: recent, at: at(10) },
    ]);
    await store.countUnauthenticated([
      { ip, minute: Math.floor(at(400) / 60_000) * 60_000, count: 3 },
      { ip, minute: Math.floor(at(10) / 60_000) * 60_000, count: 4 },
    ]);
    await store.prune(at(365));
    expect(await store.byRequestId(old)).toBeUndefined();
    expect(await store.byRequestId(recent)).toMatchObject({ tenantId: acme.id });
    expect((await store.unauthenticated({ ip }, 10)).map((c) => c.count)).toEqual([4]);
  });
});

describe('graceful shutdown', () => {
  it('writes the buffered rows when the app closes', async () => {
    // Rows are written once an hour here: only the close can have written this one.
    const q = await startTestPlatform({ gateway: { auditFlushMs: 3_600_000 }, worker: false });
    try {
      const tenant = await q.createTenant('closing');
      const model = uniqueId('closing');
      await serveModel(q.db, tenant.id, model, { v1: fast.url }, { stable: 'v1' });
      await untilRouted(q.app, tenant.keys.developer, model);
      const traceId = uniqueId('closing');
      const res = await q.app.inject({
        method: 'POST',
        url: '/v1/chat/completions',
        headers: { ...bearer(tenant.keys.developer), 'x-trace-id': traceId },
        payload: { model, messages: [{ role: 'user', content: 'bye' }] },
      });
      expect(res.statusCode).toBe(200);
      expect(await new AuditStore(p.db).byRequestId(traceId)).toBeUndefined();
      await q.app.close();
      expect(await new AuditStore(p.db).byRequestId(traceId)).toMatchObject({ statusCode: 200, tenantId: tenant.id });
    } finally {
      await q.close();
    }
  });
});
