import { describe, expect, it } from '@jest/globals';
import { AuditBuffer } from '../../api/plugins/audit-buffer';
import { encodeAuditEntry, type AuditEntry, type UnauthenticatedCount } from '../../common/store/audit';

const HOUR = 3_600_000;
const quiet = { warn: () => {}, error: () => {} };
const row = (requestId: string): AuditEntry => ({ requestId, method: 'POST', route: '/r', url: '/r', statusCode: 200 });
/** Each row of one INSERT's JSON, as encodeAuditEntry wrote it. */
const rowsOf = (json: Buffer) => (JSON.parse(json.toString('utf8')) as unknown[]).map((r) => JSON.stringify(r));
/** The request ids of `ids` in the order one INSERT's JSON holds their rows. */
const idsIn = (json: Buffer, ids: string[]) =>
  rowsOf(json).map((r) => ids.find((id) => encodeAuditEntry(row(id)) === r) ?? r);

describe('AuditBuffer', () => {
  it('writes rows in one batch and counts unauthenticated calls per address and minute', async () => {
    const batches: string[][] = [];
    const counted: UnauthenticatedCount[][] = [];
    const buffer = new AuditBuffer({
      store: {
        insertJson: async (rows) => void batches.push(idsIn(rows, ['a', 'b'])),
        countUnauthenticated: async (c) => void counted.push(c),
      },
      flushMs: HOUR,
      logger: quiet,
    });
    buffer.add(row('a'));
    buffer.add(row('b'));
    const minute = 1_700_000_040_000;
    buffer.unauthenticated('192.0.2.1', minute + 1);
    buffer.unauthenticated('192.0.2.1', minute + 59_000);
    buffer.unauthenticated('192.0.2.1', minute + 60_000);
    buffer.unauthenticated('192.0.2.2', minute);
    await buffer.close();
    expect(batches).toEqual([['a', 'b']]);
    expect(counted).toEqual([
      [
        { ip: '192.0.2.1', minute, count: 2 },
        { ip: '192.0.2.1', minute: minute + 60_000, count: 1 },
        { ip: '192.0.2.2', minute, count: 1 },
      ],
    ]);
  });

  it('keeps what a failed flush could not write and writes it, with what came since, next time', async () => {
    let fail = true;
    const written: string[] = [];
    const counts: number[] = [];
    const buffer = new AuditBuffer({
      store: {
        insertJson: async (rows) => {
          if (fail) throw new Error('database down');
          written.push(...idsIn(rows, ['a', 'b']));
        },
        countUnauthenticated: async (c) => {
          if (fail) throw new Error('database down');
          counts.push(...c.map((x) => x.count));
        },
      },
      flushMs: HOUR,
      logger: quiet,
    });
    buffer.add(row('a'));
    buffer.unauthenticated('192.0.2.1', 0);
    await buffer.flush();
    expect(written).toEqual([]);
    buffer.add(row('b'));
    buffer.unauthenticated('192.0.2.1', 1);
    fail = false;
    await buffer.close();
    expect(written).toEqual(['a', 'b']);
    expect(counts).toEqual([2]);
  });

  it('splits many rows into INSERTs of at most 5,000, in order, whatever their text', async () => {
    const inserts: string[][] = [];
    const buffer = new AuditBuffer({
      store: {
        insertJson: async (rows) => void inserts.push(rowsOf(rows)),
        countUnauthenticated: async () => {},
      },
      flushMs: HOUR,
      logger: quiet,
    });
    // Rows of every size up to one larger than a whole chunk (1 MiB), with text that is longer in UTF-8 than in UTF-16.
    const entries = Array.from({ length: 12_001 }, (_, i) => ({
      ...row(`r${i}`),
      url: `/r?q=${'é😀"\\'.repeat(i % 50)}`,
    }));
    entries.push({ ...row('huge'), url: `/r?q=${'€'.repeat(400_000)}` });
    for (const e of entries) buffer.add(e);
    await buffer.close();
    expect(inserts.every((rows) => rows.length <= 5_000)).toBe(true);
    expect(inserts.flat()).toEqual(entries.map(encodeAuditEntry));
  });
});
