import { createHmac } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { RoutingStore } from '../../common/store/routing';
import { freePort, startProcess, waitFor, type ManagedProcess } from '../../deploy/dev/process';
import { startReferenceModelServer, type ReferenceModelServer } from '../../deploy/dev/model-server/server';
import { serveModel } from '../support/gateway';
import {
  bearer,
  eventually,
  startTestPlatform,
  uniqueId,
  type TestPlatform,
  type TestTenant,
} from '../support/platform';

/**
 * Usage, cost and budgets: the report of a scripted workload against costs worked out here from the model server's
 * own usage figures, its CSV form, and budgets held by two real gateway processes (alerts once per threshold, the
 * hard stop under 200 concurrent streams).
 */
const ROOT = path.resolve(__dirname, '..', '..');
const BUDGET_SLICE = 20_000;
const HOUR_MS = 3_600_000;

let p: TestPlatform;
let upstream: ReferenceModelServer;
let slow: ReferenceModelServer;
const gateways: { url: string; proc: ManagedProcess }[] = [];

async function startGateway(name: string) {
  const port = await freePort();
  const proc = await startProcess({
    name,
    command: process.execPath,
    args: ['--import', 'tsx', path.join(ROOT, 'roles', 'gateway.ts')],
    dataDir: path.join(process.env.LLMHUB_TEST_DATA!, uniqueId('usage')),
    env: {
      API_PORT: String(port),
      GATEWAY_REFRESH_MS: '1000',
      GATEWAY_METRICS_FLUSH_MS: '200',
      GATEWAY_ALERT_POLL_MS: '200',
      GATEWAY_ALERT_RETRY_MS: '200',
      GATEWAY_BUDGET_SLICE: String(BUDGET_SLICE),
      LLMHUB_WEBHOOK_EGRESS_ALLOW: '127.0.0.1/32',
      // The key file the test platform's API sealed the webhook secrets with.
      LLMHUB_KEK_FILE: p.kekFile,
      LOG_LEVEL: 'warn',
    },
  });
  const url = `http://127.0.0.1:${port}`;
  gateways.push({ url, proc });
  await waitFor(`${name} to listen`, async () => (await fetch(`${url}/healthz`)).ok, 120_000, 250);
}

beforeAll(async () => {
  p = await startTestPlatform({ worker: false, gateway: { metricsFlushMs: 100, alertPollMs: 100, alertRetryMs: 100 } });
  [upstream, slow] = await Promise.all([
    startReferenceModelServer({ name: 'priced', faults: { replyTokens: 20 } }),
    // Streams that take a while, so the 200 below are in flight together.
    startReferenceModelServer({ name: 'slow', faults: { ttftMs: 200, replyTokens: 20 } }),
  ]);
  await Promise.all([startGateway('usage-gw-1'), startGateway('usage-gw-2')]);
});
afterAll(async () => {
  await Promise.all(gateways.map((g) => g.proc.stop()));
  await Promise.all([upstream, slow].map((s) => s?.close()));
  await p?.close();
});

const api = async (method: string, url: string, key: string, payload?: object) => {
  const res = await p.app.inject({ method: method as 'GET', url, headers: bearer(key), ...(payload && { payload }) });
  return { status: res.statusCode, body: res.body ? (JSON.parse(res.body) as Record<string, unknown>) : {} };
};
const ok = async (method: string, url: string, key: string, payload?: object) => {
  const res = await api(method, url, key, payload);
  expect({ url, status: res.status, body: res.body }).toMatchObject({ status: method === 'DELETE' ? 204 : 200 });
  return res.body;
};

interface ReportRow {
  tenant?: string;
  project?: string;
  model?: string;
  key?: string;
  currency: string | null;
  requests: number;
  promptTokens: number;
  completionTokens: number;
  cost: number | null;
}

describe('usage and cost', () => {
  let acme: TestTenant;
  let other: TestTenant;
  const M = uniqueId('own-priced');
  const M2 = uniqueId('platform-priced');
  const hourAgo = new Date(Date.now() - HOUR_MS).toISOString();

  beforeAll(async () => {
    [acme, other] = [await p.createTenant('acme'), await p.createTenant('other')];
    for (const m of [M, M2]) await serveModel(p.db, acme.id, m, { a: upstream.url }, { stable: 'a' });
    expect((await api('POST', '/v1/projects', acme.keys.admin, { id: 'p1' })).status).toBe(201);
  });

  it('reports the metered usage of a scripted workload at its prices, the same in JSON and CSV, to its tenant only', async () => {
    // The tenant's own price of M, one that is not in effect yet, and the platform's price of M2, which wins over the tenant's.
    await ok('PUT', '/v1/prices', acme.keys.admin, {
      model: M,
      currency: 'USD',
      inputPerMillion: 3,
      outputPerMillion: 7,
      effectiveFrom: hourAgo,
    });
    await ok('PUT', '/v1/prices', acme.keys.admin, {
      model: M,
      currency: 'USD',
      inputPerMillion: 1000,
      outputPerMillion: 1000,
      effectiveFrom: new Date(Date.now() + 24 * HOUR_MS).toISOString(),
    });
    await ok('PUT', '/v1/platform/prices', p.operatorKey, {
      model: M2,
      currency: 'EUR',
      inputPerMillion: 2.5,
      outputPerMillion: 5,
      effectiveFrom: hourAgo,
    });
    await ok('PUT', '/v1/prices', acme.keys.admin, {
      model: M2,
      currency: 'USD',
      inputPerMillion: 1,
      outputPerMillion: 1,
    });
    // A tenant member cannot set the platform's prices.
    expect(
      (
        await api('PUT', '/v1/platform/prices', acme.keys.admin, {
          model: M2,
          currency: 'USD',
          inputPerMillion: 0,
          outputPerMillion: 0,
        })
      ).status,
    ).toBe(403);
    const listed = (await ok('GET', '/v1/prices', acme.keys.viewer)).prices as { scope: string; model: string }[];
    expect(listed.filter((x) => x.model === M2).map((x) => x.scope)).toEqual(['platform', 'tenant']);

    const second = await p.tenants.createApiKey(acme.id, 'second', 'developer');
    const devId = ((await ok('GET', '/v1/api-keys', acme.keys.admin)).apiKeys as { id: string; name: string }[]).find(
      (k) => k.name === 'developer-key',
    )!.id;
    // What the model server said it used, per (project, model, key): the expectation the report must meet.
    const price = { [M]: { currency: 'USD', in: 3, out: 7 }, [M2]: { currency: 'EUR', in: 2.5, out: 5 } };
    const expected = new Map<string, ReportRow & { micros: number }>();
    let calls = 0;
    const call = async (model: string, project: string, key: string, subject: string, maxTokens: number) => {
      const res = await p.app.inject({
        method: 'POST',
        url: '/v1/chat/completions',
        headers: { ...bearer(key), 'x-project-id': project },
        payload: { model, max_tokens: maxTokens, messages: [{ role: 'user', content: `count ${maxTokens} words` }] },
      });
      if (res.statusCode !== 200) return false;
      const usage = (JSON.parse(res.body) as { usage: { prompt_tokens: number; completion_tokens: number } }).usage;
      const k = `${project}|${model}|${subject}`;
      const row = expected.get(k) ?? {
        project,
        model,
        key: subject,
        currency: price[model]!.currency,
        requests: 0,
        promptTokens: 0,
        completionTokens: 0,
        cost: 0,
        micros: 0,
      };
      row.requests++;
      row.promptTokens += usage.prompt_tokens;
      row.completionTokens += usage.completion_tokens;
      row.micros += usage.prompt_tokens * price[model]!.in + usage.completion_tokens * price[model]!.out;
      expected.set(k, row);
      calls++;
      return true;
    };
    for (const m of [M, M2])
      await eventually(`the gateway to route ${m}`, () => call(m, 'default', acme.keys.developer, `key:${devId}`, 1));
    for (let i = 0; i < 12; i++) {
      const [key, subject] = i % 4 < 2 ? [acme.keys.developer, `key:${devId}`] : [second.key, `key:${second.id}`];
      expect(await call(i % 3 === 0 ? M2 : M, i % 2 ? 'p1' : 'default', key, subject, 1 + i)).toBe(true);
    }

    const query = 'group_by=project,model,key';
    const report = await eventually('every call to be metered', async () => {
      const r = await ok('GET', `/v1/usage?${query}`, acme.keys.viewer);
      const rows = r.rows as ReportRow[];
      return rows.reduce((a, x) => a + x.requests, 0) === calls && r;
    });
    expect(report.groupBy).toEqual(['project', 'model', 'key']);
    const rows = report.rows as ReportRow[];
    const want = [...expected.values()]
      .map(({ micros, ...r }) => ({ ...r, cost: micros / 1e6 }))
      .sort((a, b) => `${a.project}|${a.model}|${a.key}`.localeCompare(`${b.project}|${b.model}|${b.key}`));
    expect(rows.map((r) => ({ ...r, cost: Math.round(r.cost! * 1e6) / 1e6 }))).toEqual(
      expect.arrayContaining(want.map((w) => ({ ...w, cost: Math.round(w.cost * 1e6) / 1e6 }))),
    );
    expect(rows).toHaveLength(want.length);

    // The CSV is the JSON, line for line.
    const csv = await p.app.inject({
      method: 'GET',
      url: `/v1/usage/export?${query}`,
      headers: bearer(acme.keys.viewer),
    });
    expect(csv.statusCode).toBe(200);
    expect(csv.headers['content-type']).toMatch(/^text\/csv/);
    const [header, ...lines] = csv.body.trimEnd().split('\r\n');
    expect(header).toBe('project,model,key,currency,requests,prompt_tokens,completion_tokens,cost');
    expect(lines).toEqual(
      rows.map((r) =>
        [r.project, r.model, r.key, r.currency, r.requests, r.promptTokens, r.completionTokens, r.cost].join(','),
      ),
    );

    // Per day and per hour the same totals, per currency.
    const totals = (rs: ReportRow[]) => {
      const t: Record<string, { requests: number; micros: number }> = {};
      for (const r of rs) {
        const c = (t[r.currency!] ??= { requests: 0, micros: 0 });
        c.requests += r.requests;
        c.micros += Math.round(r.cost! * 1e6);
      }
      return t;
    };
    for (const g of ['day', 'hour']) {
      const byTime = (await ok('GET', `/v1/usage?group_by=${g}`, acme.keys.viewer)).rows as ReportRow[];
      expect(byTime.every((r) => typeof (r as unknown as Record<string, unknown>)[g] === 'string')).toBe(true);
      expect(totals(byTime)).toEqual(totals(rows));
    }

    // Another tenant sees none of it; an operator sees it among all tenants'; a tenant's admin is not an operator.
    expect((await ok('GET', '/v1/usage', other.keys.admin)).rows).toEqual([]);
    const platform = (await ok('GET', `/v1/platform/usage?tenant=${acme.id}&group_by=tenant`, p.operatorKey))
      .rows as ReportRow[];
    expect(platform.map((r) => r.tenant)).toEqual(platform.map(() => acme.id));
    expect(totals(platform)).toEqual(totals(rows));
    const all = (await ok('GET', '/v1/platform/usage?group_by=tenant', p.operatorKey)).rows as ReportRow[];
    expect(all.some((r) => r.tenant === acme.id)).toBe(true);
    expect((await api('GET', '/v1/platform/usage', acme.keys.admin)).status).toBe(403);
    expect((await api('GET', '/v1/usage?group_by=tenant', acme.keys.admin)).status).toBe(400);
    expect((await ok('GET', '/v1/usage?from=2999-01-01T00:00:00Z', acme.keys.viewer)).rows).toEqual([]);
    expect((await api('GET', '/v1/usage?from=1999-12-31T00:00:00Z', acme.keys.viewer)).body).toMatchObject({
      error: { details: { field: 'querystring.from' } },
    });
  });
});

const post = (url: string, key: string, body: object) =>
  fetch(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: { ...bearer(key), 'content-type': 'application/json' },
    body: JSON.stringify({ messages: [{ role: 'user', content: 'hi' }], ...body }),
  });

/**
 * Waits until both gateway processes have read everything committed so far: a replica reads routes, prices and
 * budgets in one snapshot, so once both route a marker model by a weight written after them, both know them too.
 */
async function untilBothRefreshed(t: TestTenant, marker: string, weight: { value: number }) {
  weight.value = 100 - weight.value;
  await new RoutingStore(p.db).setRoute(t.id, marker, { stable: 'a', canary: 'b', canaryWeight: weight.value });
  const version = weight.value === 100 ? 'b' : 'a';
  for (const { url } of gateways)
    await eventually(
      `${url} to refresh`,
      async () =>
        (await post(url, t.keys.developer, { model: marker })).headers.get('x-llmhub-model-version') === version,
      30_000,
    );
}

describe('budgets on two gateway processes', () => {
  it('alerts once per threshold, delivered at least once with the same id and a valid signature', async () => {
    const t = await p.createTenant('alerts');
    const model = uniqueId('billed');
    const marker = uniqueId('marker');
    const weight = { value: 0 };
    await serveModel(p.db, t.id, model, { a: upstream.url }, { stable: 'a' });
    await serveModel(
      p.db,
      t.id,
      marker,
      { a: upstream.url, b: upstream.url },
      { stable: 'a', canary: 'b', canaryWeight: 0 },
    );
    const secret = 'whsec-0123456789abcdef';
    // Each event's first delivery is refused, so every alert is delivered twice: at least once, with its id.
    const deliveries: { id: string; body: string; signature: string; status: number }[] = [];
    const receiver: Server = createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString('utf8')));
      req.on('end', () => {
        const id = String(req.headers['x-llmhub-event-id']);
        const status = deliveries.some((d) => d.id === id) ? 204 : 500;
        deliveries.push({ id, body, signature: String(req.headers['x-llmhub-signature']), status });
        res.writeHead(status).end();
      });
    });
    await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
    try {
      const webhookUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hooks/budget`;
      // 1000 per million tokens: a request of ~21 tokens costs ~0.021, so 1.0 lasts ~47 requests.
      await ok('PUT', '/v1/prices', t.keys.admin, {
        model,
        currency: 'USD',
        inputPerMillion: 1000,
        outputPerMillion: 1000,
      });
      expect(
        (await api('PUT', '/v1/budgets', t.keys.admin, { amount: 1, currency: 'USD', webhookUrl })).body,
      ).toMatchObject({ error: { type: 'invalid_request', message: expect.stringContaining('webhookSecret') } });
      const budget = await ok('PUT', '/v1/budgets', t.keys.admin, {
        amount: 1,
        currency: 'USD',
        webhookUrl,
        webhookSecret: secret,
      });
      expect(budget).toMatchObject({ project: '', thresholds: [50, 80, 100], webhookSecretSet: true, spent: 0 });
      // A webhook URL is an outbound address of the tenant's: internal addresses are refused when it is set, as a
      // provider's base URL is (the test platform allows loopback only), and the budget is left as it was.
      for (const internal of ['http://169.254.169.254/latest/meta-data', 'http://10.0.0.1/hook', 'http://[::1]:9/hook'])
        expect(
          await api('PUT', '/v1/budgets', t.keys.admin, {
            amount: 5,
            currency: 'USD',
            webhookUrl: internal,
            webhookSecret: secret,
          }),
        ).toMatchObject({
          status: 403,
          body: {
            error: {
              message: expect.stringMatching(/^egress to .* is refused/),
              details: { field: 'body.webhookUrl' },
            },
          },
        });
      expect((await ok('GET', '/v1/budgets', t.keys.viewer)).budgets).toMatchObject([{ amount: 1, webhookUrl }]);
      expect(JSON.stringify(budget)).not.toContain(secret);
      // At rest only an envelope; without a key-encryption key a webhook is refused with 503, before anything is written.
      const { rows: stored } = await p.db.query('SELECT webhook_secret::text AS s FROM budgets WHERE tenant_id = $1', [
        t.id,
      ]);
      expect(stored[0].s).toContain('"kek"');
      for (const form of [secret, Buffer.from(secret).toString('base64')]) expect(stored[0].s).not.toContain(form);
      const platform = p.app.platform as { providers?: unknown };
      const { providers } = platform;
      delete platform.providers;
      try {
        const refused = await api('PUT', '/v1/budgets', t.keys.admin, {
          amount: 2,
          currency: 'USD',
          webhookUrl,
          webhookSecret: secret,
        });
        expect(refused).toMatchObject({
          status: 503,
          body: { error: { type: 'unavailable', message: expect.stringContaining('LLMHUB_KEK_FILE') } },
        });
      } finally {
        platform.providers = providers;
      }
      await untilBothRefreshed(t, marker, weight);

      // Concurrent traffic on both processes, until the metered spend is past 80 %.
      const spent = async () =>
        ((await ok('GET', '/v1/budgets', t.keys.viewer)).budgets as { spent: number }[])[0]!.spent;
      await eventually(
        'the spend to pass 80 %',
        async () => {
          const answers = await Promise.all(
            Array.from({ length: 6 }, (_, i) =>
              post(gateways[i % 2]!.url, t.keys.developer, { model, max_tokens: 20 }),
            ),
          );
          const odd = answers.find((r) => r.status !== 200 && r.status !== 429);
          if (odd) throw new Error(`a call answered ${odd.status}: ${await odd.text()}`);
          return (await spent()) >= 0.8;
        },
        60_000,
      );
      await eventually('the 50 and 80 % alerts', async () => {
        const alerts = (await ok('GET', '/v1/budgets/alerts', t.keys.viewer)).alerts as { threshold: number }[];
        return alerts.length >= 2;
      });
      // Lowered to what is spent: the 100 % alert is decided by the change, and both processes stop the tenant.
      const now = await spent();
      await ok('PUT', '/v1/budgets', t.keys.admin, { amount: now, currency: 'USD', webhookUrl, webhookSecret: secret });
      for (const { url } of gateways) {
        const refused = await eventually(`${url} to stop the tenant`, async () => {
          const res = await post(url, t.keys.developer, { model, max_tokens: 20 });
          return res.status === 429 && res;
        });
        expect(Number(refused.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
        expect(await refused.json()).toMatchObject({
          error: { type: 'rate_limit_error', code: 'budget_exceeded', param: null, message: expect.any(String) },
        });
      }

      const alerts = await eventually('every alert to be delivered', async () => {
        const a = (await ok('GET', '/v1/budgets/alerts', t.keys.viewer)).alerts as {
          id: string;
          threshold: number;
          deliveredAt: string | null;
          attempts: number;
        }[];
        return a.length === 3 && a.every((x) => x.deliveredAt) && a;
      });
      expect(alerts.map((a) => a.threshold).sort((x, y) => x - y)).toEqual([50, 80, 100]);
      expect(alerts.every((a) => a.attempts >= 2)).toBe(true);
      const { rows } = await p.db.query('SELECT threshold FROM budget_alerts WHERE tenant_id = $1', [t.id]);
      expect(rows).toHaveLength(3);
      for (const a of alerts) {
        const sent = deliveries.filter((d) => d.id === a.id);
        expect(sent.map((d) => d.status)).toEqual([500, 204]);
        // The same event on every attempt, each signed with the budget's secret over its own timestamp.
        expect(new Set(sent.map((d) => d.body)).size).toBe(1);
        for (const d of sent) {
          const [, ts, v1] = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(d.signature)!;
          expect(v1).toBe(createHmac('sha256', secret).update(`${ts}.${d.body}`).digest('hex'));
        }
        expect(JSON.parse(sent[0]!.body)).toMatchObject({
          id: a.id,
          type: 'budget.threshold_reached',
          tenantId: t.id,
          projectId: null,
          thresholdPercent: a.threshold,
          currency: 'USD',
        });
      }
      // No other event was sent.
      expect(new Set(deliveries.map((d) => d.id)).size).toBe(3);
    } finally {
      await new Promise((r) => receiver.close(r));
    }
  });

  it('stops 200 concurrent streams split across both at the budget, overshooting by no more than the reservations', async () => {
    const t = await p.createTenant('stop');
    const model = uniqueId('streamed');
    const marker = uniqueId('marker');
    await serveModel(p.db, t.id, model, { a: slow.url }, { stable: 'a' });
    await serveModel(
      p.db,
      t.id,
      marker,
      { a: upstream.url, b: upstream.url },
      { stable: 'a', canary: 'b', canaryWeight: 0 },
    );
    const PER_MILLION = 100;
    await ok('PUT', '/v1/prices', t.keys.admin, {
      model,
      currency: 'USD',
      inputPerMillion: PER_MILLION,
      outputPerMillion: PER_MILLION,
    });
    const BUDGET_MICROS = 500_000;
    await ok('PUT', '/v1/budgets', t.keys.admin, { amount: BUDGET_MICROS / 1e6, currency: 'USD' });
    await untilBothRefreshed(t, marker, { value: 0 });

    const body = { model, stream: true, max_tokens: 20, stream_options: { include_usage: true } };
    // What the gateway reserves per stream: the prompt at 4 bytes a token plus max_tokens, at the price.
    const reservation =
      (Math.ceil(Buffer.byteLength(JSON.stringify({ messages: [{ role: 'user', content: 'hi' }], ...body })) / 4) +
        body.max_tokens) *
      PER_MILLION;
    const answers = await Promise.all(
      Array.from({ length: 200 }, async (_, i) => {
        const r = await post(gateways[i % 2]!.url, t.keys.developer, body);
        return { status: r.status, retryAfter: r.headers.get('retry-after'), text: await r.text() };
      }),
    );
    const streamed = answers.filter((a) => a.status === 200);
    const stopped = answers.filter((a) => a.status === 429);
    expect(streamed.length + stopped.length).toBe(200);
    expect(stopped.length).toBeGreaterThan(0);
    expect(streamed.every((a) => a.text.endsWith('data: [DONE]\n\n'))).toBe(true);
    for (const a of stopped) {
      expect(Number(a.retryAfter)).toBeGreaterThanOrEqual(1);
      expect(JSON.parse(a.text)).toMatchObject({ error: { type: 'rate_limit_error', code: 'budget_exceeded' } });
    }

    const micros = await eventually('every stream to be metered', async () => {
      const rows = (await ok('GET', '/v1/usage?group_by=model', t.keys.viewer)).rows as ReportRow[];
      const row = rows.find((r) => r.model === model);
      return row?.requests === streamed.length && Math.round(row.cost! * 1e6);
    });
    // Admitted streams' reservations never exceed what the two processes leased of the budget; the real cost is at most
    // the reservations, so the overshoot is bounded by the reservations outstanding when the budget ran out.
    expect(micros).toBeLessThanOrEqual(BUDGET_MICROS + 2 * reservation);
    // The budget was really spent, not refused wholesale: only what each process still held of its slice is left.
    // (A hot window's slice grows up to a sixteenth of the budget.)
    const slice = Math.max(BUDGET_SLICE, BUDGET_MICROS / 16);
    expect(streamed.length * reservation).toBeGreaterThanOrEqual(BUDGET_MICROS - 2 * (slice + reservation));
  });
});
