import { describe, expect, it } from '@jest/globals';
import { readiness } from '../../api/routes/health';

describe('readiness', () => {
  it('names the failing dependency, logs why, and never answers with the driver error text', async () => {
    const logged: unknown[] = [];
    const result = await readiness(
      {
        database: () =>
          Promise.reject(new Error('password authentication failed for user "llmhub" at db.internal:5432')),
        temporal: () => Promise.resolve({}),
      },
      { warn: (obj: unknown) => void logged.push(obj) } as never,
    );
    expect(result).toEqual({ ready: false, checks: { database: 'unavailable', temporal: 'ok' } });
    expect(JSON.stringify(result)).not.toMatch(/password|db\.internal|llmhub/);
    expect(logged).toEqual([expect.objectContaining({ dependency: 'database' })]);
  });

  it('is ready when every dependency answers', async () => {
    expect(await readiness({ database: async () => 1 }, { warn: () => undefined } as never)).toEqual({
      ready: true,
      checks: { database: 'ok' },
    });
  });
});
