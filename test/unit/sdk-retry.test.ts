import { describe, expect, it } from '@jest/globals';
import { createClient, LLMHubError, ok } from '../../sdk/src';

/** A transport that answers from a script and records what it was sent. */
function scripted(answers: (() => Response)[]) {
  const sent: { method: string; path: string; key: string | null; body: string }[] = [];
  const fetch = async (r: Request) => {
    sent.push({
      method: r.method,
      path: new URL(r.url).pathname,
      key: r.headers.get('idempotency-key'),
      body: await r.text(),
    });
    const next = answers.shift();
    if (!next) throw new Error('no more answers');
    return next();
  };
  return { sent, fetch };
}

const unavailable = () =>
  Response.json(
    { error: { type: 'unavailable', message: 'try again' } },
    { status: 503, headers: { 'retry-after': '0' } },
  );
const dropped = () => {
  throw new TypeError('fetch failed');
};
const started = () =>
  Response.json(
    {
      deploymentId: 'k',
      workflowId: 'rollout/demo/k',
      status: 'running',
      startedAt: 'x',
      statusUrl: '/v1/deployments/k',
    },
    { status: 202 },
  );
const body = { modelId: 'demo', cluster: 'local' as const, resources: { cpu: '1', gpu: 0 } };
const options = { baseUrl: 'http://platform.test', apiKey: 'k', retry: { minDelayMs: 1 } };

describe('SDK retries', () => {
  it('an operation start gets one Idempotency-Key, sent again with the same body on every attempt', async () => {
    const t = scripted([dropped, unavailable, started]);
    const hub = createClient({ ...options, fetch: t.fetch });
    expect((await ok(hub.POST('/v1/deploy', { body }))).deploymentId).toBe('k');
    expect(t.sent).toHaveLength(3);
    const keys = new Set(t.sent.map((s) => s.key));
    expect(keys.size).toBe(1);
    expect([...keys][0]).toMatch(/^[0-9a-f-]{36}$/);
    expect(new Set(t.sent.map((s) => s.body))).toEqual(new Set([JSON.stringify(body)]));
  });

  it("keeps the caller's key", async () => {
    const t = scripted([unavailable, started]);
    const hub = createClient({ ...options, fetch: t.fetch });
    await ok(hub.POST('/v1/deploy', { body, params: { header: { 'idempotency-key': 'mine' } } }));
    expect(t.sent.map((s) => s.key)).toEqual(['mine', 'mine']);
  });

  it('sends a call that could take effect twice once (a new API key), and stops after the retries', async () => {
    const once = scripted([unavailable, started]);
    const hub = createClient({ ...options, fetch: once.fetch });
    const err = await hub.POST('/v1/api-keys', { body: { name: 'n', role: 'viewer' } }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LLMHubError);
    expect([(err as LLMHubError).status, (err as LLMHubError).type]).toEqual([503, 'unavailable']);
    expect(once.sent).toHaveLength(1);
    expect(once.sent[0]!.key).toBeNull();

    const down = scripted([unavailable, unavailable, unavailable]);
    const limited = createClient({ ...options, retry: { retries: 2, minDelayMs: 1 }, fetch: down.fetch });
    await expect(limited.GET('/v1/models/', {})).rejects.toBeInstanceOf(LLMHubError);
    expect(down.sent).toHaveLength(3);
  });
});
