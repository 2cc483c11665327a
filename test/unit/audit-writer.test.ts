import { describe, expect, it } from '@jest/globals';
import { AuditWriter } from '../../api/plugins/audit-writer';
import type { AuditEntry } from '../../common/store/audit';

const row = (requestId: string): AuditEntry => ({ requestId, method: 'POST', route: '/r', url: '/r', statusCode: 202 });

/** A store whose INSERTs finish only when the test lets them. */
function heldStore() {
  const batches: string[][] = [];
  const pending: Array<{ finish: () => void; fail: (err: Error) => void }> = [];
  return {
    batches,
    pending,
    store: {
      insert: (rows: AuditEntry[]) =>
        new Promise<void>((finish, fail) => {
          batches.push(rows.map((r) => r.requestId));
          pending.push({ finish, fail });
        }),
    },
  };
}

describe('AuditWriter', () => {
  it('writes a lone row at once and puts rows that arrive meanwhile into one next INSERT', async () => {
    const { batches, pending, store } = heldStore();
    const writer = new AuditWriter(store);
    const done: string[] = [];
    const write = (id: string) => writer.write(row(id)).then(() => done.push(id));
    const a = write('a');
    const rest = ['b', 'c', 'd'].map(write);
    expect(batches).toEqual([['a']]);
    pending[0]!.finish();
    await a;
    expect(done).toEqual(['a']);
    // Resolved only once their own INSERT is done.
    await new Promise((r) => setImmediate(r));
    expect(batches).toEqual([['a'], ['b', 'c', 'd']]);
    expect(done).toEqual(['a']);
    pending[1]!.finish();
    await Promise.all(rest);
    expect(done).toEqual(['a', 'b', 'c', 'd']);
  });

  it('fails the callers of a failed INSERT only, and writes later rows', async () => {
    const { batches, pending, store } = heldStore();
    const writer = new AuditWriter(store);
    const a = writer.write(row('a'));
    const b = writer.write(row('b'));
    pending[0]!.fail(new Error('database down'));
    await expect(a).rejects.toThrow('database down');
    await new Promise((r) => setImmediate(r));
    pending[1]!.finish();
    await expect(b).resolves.toBeUndefined();
    const c = writer.write(row('c'));
    pending[2]!.finish();
    await expect(c).resolves.toBeUndefined();
    expect(batches).toEqual([['a'], ['b'], ['c']]);
  });
});
