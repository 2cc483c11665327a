import { describe, expect, it } from '@jest/globals';
import { createInferenceActivities, RUNTIME_KEY_MAX_AGE_MS, RUNTIME_KEY_NAME } from '../../activities/inference';
import type { TenantStore } from '../../common/store/tenants';

describe('agent runtime keys', () => {
  it('each mint first revokes the tenant runtime keys older than the maximum age, and a held key is reused', async () => {
    const calls: string[] = [];
    const tenants = {
      revokeApiKeysNamed: async (tenantId: string, name: string, before: number) => {
        calls.push(`revoke ${tenantId} ${name} ${Date.now() - before >= RUNTIME_KEY_MAX_AGE_MS}`);
        return 0;
      },
      createApiKey: async (tenantId: string) => {
        calls.push(`create ${tenantId}`);
        return { id: 'k', key: 'llmhub_k_secret' };
      },
    } as unknown as TenantStore;
    const seen: (string | null)[] = [];
    const server = await import('node:http').then(({ createServer }) =>
      createServer((req, res) => {
        seen.push(req.headers.authorization ?? null);
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ choices: [{ message: { content: 'hi' }, finish_reason: 'stop' }] }));
      }),
    );
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as { port: number };
    try {
      const { chatCompletion } = createInferenceActivities({ tenants, gatewayUrl: `http://127.0.0.1:${port}` });
      const turn = {
        tenantId: 't1',
        traceId: 'tr',
        model: 'm',
        messages: [{ role: 'user' as const, content: 'x' }],
        tools: [],
      };
      expect((await chatCompletion(turn)).content).toBe('hi');
      await chatCompletion(turn);
      expect(calls).toEqual([`revoke t1 ${RUNTIME_KEY_NAME} true`, 'create t1']);
      expect(seen).toEqual(['Bearer llmhub_k_secret', 'Bearer llmhub_k_secret']);
    } finally {
      server.close();
    }
  });
});
