import { describe, expect, it } from '@jest/globals';
import { AuditBuffer } from '../../api/plugins/audit-buffer';
import { encodeAuditEntry, type AuditEntry, type UnauthenticatedCount } from '../../common/store/audit';

const HOUR = 3_600_000;
const quiet = { warn: () => {}, error: () => {} };
const row = (requestId: string): AuditEntry => ({ requestId, method: 'POST', route: '/r', url: '/r', statusCode: 200 });
/** The request id of each row as the buffer handed it to the store. */
const idsOf = (rows: string[]) => rows.map((r) => ['a', 'b'].find((id) => encodeAuditEntry(row(id)) === r));

describe('AuditBuffer', () => {
  it('writes rows in one batch and counts unauthenticated calls per address and minute', async () => {
    const batches: (string | undefined)[][] = [];
    const counted: UnauthenticatedCount[][] = [];
    const buffer = new AuditBuffer({
      store: {
        insertEncoded: async (rows) => void batches.push(idsOf(rows)),
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
    const written: (string | undefined)[] = [];
    const counts: number[] = [];
    const buffer = new AuditBuffer({
      store: {
        insertEncoded: async (rows) => {
          if (fail) throw new Error('database down');
          written.push(...idsOf(rows));
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
});
