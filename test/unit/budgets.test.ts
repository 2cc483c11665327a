import { createHmac } from 'node:crypto';
import { describe, expect, it, jest } from '@jest/globals';
import { alertSignature, BudgetAlertSender } from '../../api/gateway/alert-sender';
import { SliceLimiter, type Admission } from '../../api/gateway/limiter';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { CredentialVault, KeyFileKeks, newKeyFile } from '../../common/credentials';
import { EgressPolicy } from '../../common/egress';
import { webhookSecretContext, type DueAlert } from '../../common/store/budgets';
import { budgetSubject, monthOf, type LimitRule, type WindowRef } from '../../common/store/limits';

const quiet = { warn: () => undefined, error: () => undefined };

describe('budgets', () => {
  it("admits by cost in the budget's currency within the calendar month, and refuses with the budget's scope", async () => {
    jest.useFakeTimers({
      doNotFake: ['setImmediate', 'nextTick', 'queueMicrotask'],
      now: Date.UTC(2026, 1, 27, 12),
    });
    try {
      let left = 10_000;
      const windows: WindowRef[] = [];
      const store = {
        lease: async (_rule: LimitRule, w: WindowRef, want: { requests: number; tokens: number }) => {
          windows.push(w);
          const tokens = Math.min(left, want.tokens);
          left -= tokens;
          return { requests: 0, tokens };
        },
        adjust: async () => undefined,
      };
      const limiter = new SliceLimiter(store, {
        requestSlice: 5,
        tokenSlice: 5,
        budgetSlice: 1_000,
        leaseIdleMs: 60_000,
        logger: quiet,
      });
      const budget: LimitRule = {
        tenantId: 't',
        subject: budgetSubject(''),
        windowSeconds: 1,
        maxRequests: null,
        maxTokens: 10_000,
        currency: 'USD',
      };
      const admit = async (cost?: { currency: string; micros: number }): Promise<Admission> => {
        const a = limiter.admit([budget], 1_000_000, cost);
        return a instanceof Promise ? a : a;
      };
      // Tokens do not count against a budget, and a cost in another currency is not its cost.
      const free = await admit({ currency: 'EUR', micros: 50_000 });
      expect(free.ok).toBe(true);
      let admitted = 0;
      for (;;) {
        const a = await admit({ currency: 'USD', micros: 3_000 });
        if (!a.ok) {
          expect(a.scope).toBe('budget');
          expect(a.reason).toContain('monthly budget');
          // Until the month ends (1 March 00:00 UTC), not the rule's windowSeconds.
          expect(a.retryAfterSeconds).toBe(36 * 3600);
          break;
        }
        admitted++;
        // Settled at less than reserved: what is left is freed for the next.
        a.reservation.settle(0, 1_000);
      }
      // 10,000 in all: each reserves 3,000 and keeps 1,000 of it.
      expect(admitted).toBe(8);
      expect(windows.every((w) => w.windowStart === monthOf(Date.now()).start)).toBe(true);
      expect(windows[0]!.windowStart).toBe(Date.UTC(2026, 1, 1));
      await limiter.close();
    } finally {
      jest.useRealTimers();
    }
  });

  it('signs an alert over its timestamp and body with its sealed secret, and retries what cannot be sent yet', async () => {
    const SECRET = 's3cret-s3cret-s3cret';
    const dir = await mkdtemp(path.join(tmpdir(), 'kek-'));
    await writeFile(path.join(dir, 'keys.json'), newKeyFile('k1'));
    const vault = new CredentialVault(new KeyFileKeks(path.join(dir, 'keys.json')));
    expect(alertSignature('s3cret-s3cret-s3cret', 1_700_000_000, '{"a":1}')).toBe(
      `t=1700000000,v1=${createHmac('sha256', 's3cret-s3cret-s3cret').update('1700000000.{"a":1}').digest('hex')}`,
    );
    const alert: DueAlert = {
      id: '00000000-0000-4000-8000-000000000001',
      tenantId: 't',
      projectId: '',
      period: '2026-02',
      threshold: 50,
      spent: 5,
      amount: 10,
      currency: 'USD',
      createdAt: '2026-02-27T12:00:00.000000Z',
      attempts: 1,
      deliveredAt: null,
      abandonedAt: null,
      lastError: null,
      webhookUrl: 'http://127.0.0.1:65000/hook',
      webhookSecret: await vault.seal(SECRET, webhookSecretContext('t', '')),
    };
    // The same sealed secret copied onto another budget: bound to its own, it does not open there.
    const moved = { ...alert, id: '00000000-0000-4000-8000-000000000003', projectId: 'p2' };
    const failed: { id: string; error: string; retryAt: Date | null }[] = [];
    let due = [alert, { ...alert, id: '00000000-0000-4000-8000-000000000002', webhookUrl: null }, moved];
    const egress = new EgressPolicy();
    const sender = new BudgetAlertSender({
      vault,
      store: {
        claimDue: async () => {
          const out = due;
          due = [];
          return out;
        },
        delivered: async () => undefined,
        failed: async (id, error, retryAt) => void failed.push({ id, error, retryAt }),
      },
      egress,
      pollMs: 60_000,
      retryMs: 1_000,
      logger: quiet,
    });
    sender.wake();
    await sender.close();
    await egress.close();
    const byId = new Map(failed.map((f) => [f.id, f]));
    expect(JSON.stringify(failed)).not.toContain(SECRET);
    // A secret that does not open is retried (the key may come back), its error naming neither secret nor data.
    expect(byId.get(moved.id)).toMatchObject({ error: expect.stringMatching(/^the webhook secret does not open/) });
    expect(byId.get(moved.id)!.retryAt).toBeInstanceOf(Date);
    // Loopback is internal: refused before any connection, and tried again later.
    expect(byId.get(alert.id)!.error).toMatch(/^egress to 127\.0\.0\.1 is refused/);
    expect(byId.get(alert.id)!.retryAt).toBeInstanceOf(Date);
    // Without a webhook there is nothing to retry.
    expect(byId.get('00000000-0000-4000-8000-000000000002')).toMatchObject({ retryAt: null });
  });
});
