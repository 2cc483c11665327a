import { describe, expect, it } from '@jest/globals';
import { BadRequestError } from '../../common/errors';
import { cursorPattern, decodeCursor, encodeCursor, KeyPart, keysetPage, type Keyset } from '../../common/store/pages';

const ITEMS: Keyset<{ at: string; id: string }> = {
  list: 'items',
  parts: [KeyPart.time, KeyPart.text],
  keyOf: (r) => [r.at, r.id],
};

describe('keyset pages', () => {
  it('gives back the key a cursor of the list holds, and refuses anything else naming querystring.cursor', () => {
    const key = ['2026-12-06T11:00:00.123456Z', 'k1'];
    expect(decodeCursor(ITEMS, encodeCursor(ITEMS, key))).toEqual(key);
    const other = { ...ITEMS, list: 'other-list' };
    const good = encodeCursor(ITEMS, key);
    for (const cursor of [
      'garbage',
      '',
      encodeCursor(other, key),
      good.split('.').slice(0, 2).join('.'),
      `${good}.extra`,
      good.replace(/^items\.\d+/, 'items.2026-12-06'),
      good.replace(/^items\.\d+/, `items.${'9'.repeat(17)}`),
      `${good}=`,
      `items.1.${'x'.repeat(1401)}`,
      Buffer.from(JSON.stringify(['items', key[0], 'k1'])).toString('base64url'),
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

  it('reads every cursor its documented pattern matches as a position SQL can take', () => {
    const pattern = new RegExp(cursorPattern(ITEMS));
    // Forged but well-formed: the latest time the pattern allows, bytes that are no UTF-8, a NUL, nothing at all.
    for (const cursor of [
      `items.${'9'.repeat(16)}.${Buffer.from([0xff, 0xfe, 0x00]).toString('base64url')}`,
      'items.0.',
      `items.1.${Buffer.from('nul\u0000').toString('base64url')}`,
    ]) {
      expect(cursor).toMatch(pattern);
      const [at, id] = decodeCursor(ITEMS, cursor);
      expect(Number.isNaN(Date.parse(at!))).toBe(false);
      expect(id).not.toContain('\u0000');
    }
    expect(decodeCursor(ITEMS, `items.${'9'.repeat(16)}.`)[0]).toBe('2286-11-20T17:46:39.999999Z');
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
