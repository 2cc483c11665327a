import { describe, expect, it } from '@jest/globals';
import { BadRequestError } from '../../common/errors';
import { decodeCursor, encodeCursor, KeyPart, keysetPage, type Keyset } from '../../common/store/pages';

const ITEMS: Keyset<{ at: string; id: string }> = {
  list: 'items',
  parts: [KeyPart.time, KeyPart.text],
  keyOf: (r) => [r.at, r.id],
};

describe('keyset pages', () => {
  it('gives back the key a cursor of the list holds, and refuses anything else naming querystring.cursor', () => {
    const key = ['2026-12-06T11:00:00.123456Z', 'k1'];
    expect(decodeCursor(ITEMS, encodeCursor('items', key))).toEqual(key);
    for (const cursor of [
      'garbage',
      '',
      encodeCursor('other-list', key),
      encodeCursor('items', [key[0]!]),
      encodeCursor('items', [...key, 'extra']),
      encodeCursor('items', ['2026-12-06T11:00:00.123Z', 'k1']),
      encodeCursor('items', ['2026-02-30T00:00:00.000000Z', 'k1']),
      encodeCursor('items', ['0000-01-01T00:00:00.000000Z', 'k1']),
      encodeCursor('items', [key[0]!, 'nul\u0000']),
      encodeCursor('items', [key[0]!, 'x'.repeat(1025)]),
      Buffer.from(JSON.stringify(['items', key[0], 7])).toString('base64url'),
    ]) {
      let err: unknown;
      try {
        decodeCursor(ITEMS, cursor);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(BadRequestError);
      expect((err as BadRequestError).details).toMatchObject({ field: 'querystring.cursor' });
    }
  });

  it('asks for one row past the limit, and answers a cursor at the last item only when that row came', async () => {
    const rows = Array.from({ length: 5 }, (_, i) => ({ at: '2026-12-06T11:00:00.000000Z', id: `k${i}` }));
    const asked: { after: string[] | null; take: number }[] = [];
    const fetch = async (after: string[] | null, take: number) => {
      asked.push({ after, take });
      const start = after ? rows.findIndex((r) => r.id === after[1]) + 1 : 0;
      return rows.slice(start, start + take);
    };
    const first = await keysetPage(ITEMS, { limit: 2 }, fetch);
    expect(first.items.map((r) => r.id)).toEqual(['k0', 'k1']);
    const second = await keysetPage(ITEMS, { limit: 3, cursor: first.nextCursor! }, fetch);
    expect(second.items.map((r) => r.id)).toEqual(['k2', 'k3', 'k4']);
    expect(second.nextCursor).toBeNull();
    expect(asked).toEqual([
      { after: null, take: 3 },
      { after: ['2026-12-06T11:00:00.000000Z', 'k1'], take: 4 },
    ]);
  });
});
