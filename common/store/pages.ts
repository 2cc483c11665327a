import { BadRequestError } from '../errors';

/** How many items a list answers when the caller names no limit, and the most one page may hold. */
export const PAGE_LIMIT_DEFAULT = 100;
export const PAGE_LIMIT_MAX = 1000;

export interface PageQuery {
  limit: number;
  /** The previous page's nextCursor; none for the first page. */
  cursor?: string;
}

export interface Page<T> {
  items: T[];
  /** Where the next page starts; null on the last page. */
  nextCursor: string | null;
}

/** A timestamp as text to the microsecond (all PostgreSQL holds), so a cursor at it compares exactly. */
export const cursorTime = (column: string) => `to_char(${column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`;

/**
 * One part of a sort key, as a cursor writes it: `pattern` says every form a cursor may take, and every value that
 * matches it reads back as a position (a forged cursor pages from wherever it points, never errs in SQL), so the
 * document can promise that any cursor matching the list's pattern is accepted.
 */
export interface KeyPart {
  pattern: string;
  encode(v: string): string;
  decode(s: string): string;
}

const TIME_TEXT = /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3})(\d{3})Z$/;
export const KeyPart = {
  /** A cursorTime() text, written as microseconds since 1970 (up to the year 2286). */
  time: {
    pattern: '\\d{1,16}',
    encode: (v: string) => {
      const [, ms, micros] = TIME_TEXT.exec(v) ?? [];
      if (ms === undefined || micros === undefined) throw new Error(`not a cursor time: ${v}`);
      return String(BigInt(Date.parse(`${ms}Z`)) * 1000n + BigInt(micros));
    },
    decode: (s: string) => {
      const micros = BigInt(s);
      const iso = new Date(Number(micros / 1000n)).toISOString();
      return `${iso.slice(0, 23)}${String(micros % 1000n).padStart(3, '0')}Z`;
    },
  },
  /** Text as base64url of its UTF-8; bytes that are not UTF-8, and NUL, read back as U+FFFD (no key holds them). */
  text: {
    pattern: '[A-Za-z0-9_-]{0,1400}',
    encode: (v: string) => Buffer.from(v, 'utf8').toString('base64url'),
    decode: (s: string) => Buffer.from(s, 'base64url').toString('utf8').replaceAll('\u0000', '\ufffd'),
  },
  bigint: { pattern: '\\d{1,18}', encode: (v: string) => v, decode: (s: string) => s },
} satisfies Record<string, KeyPart>;

/**
 * How one list sorts: its name, so another list's cursor is refused, and the parts of its unique sort key. A cursor
 * holds only these: never a tenant, which every query takes from the caller's credentials.
 */
export interface Keyset<R> {
  /** Lower-case letters, digits and `-`: it stands in the cursor's pattern as it is. */
  list: string;
  parts: readonly KeyPart[];
  keyOf: (row: R) => string[];
}

/** Every cursor of this list, as a regular expression (the `cursor` parameter's documented pattern). */
export const cursorPattern = (keyset: Pick<Keyset<unknown>, 'list' | 'parts'>) =>
  `^${keyset.list}${keyset.parts.map((p) => `\\.${p.pattern}`).join('')}$`;

export const encodeCursor = (keyset: Pick<Keyset<unknown>, 'list' | 'parts'>, key: string[]) =>
  [keyset.list, ...keyset.parts.map((p, i) => p.encode(key[i]!))].join('.');

/** The sort key a cursor of this list holds; 400 naming querystring.cursor for one of another list or form. */
export function decodeCursor(keyset: Pick<Keyset<unknown>, 'list' | 'parts'>, cursor: string): string[] {
  if (!new RegExp(cursorPattern(keyset)).test(cursor))
    throw new BadRequestError(`cursor is not one this list gives out (${keyset.list})`, 'querystring.cursor');
  return cursor
    .split('.')
    .slice(1)
    .map((s, i) => keyset.parts[i]!.decode(s));
}

/**
 * One keyset page: `fetch` answers up to `take` rows in key order, those after `after` (from the start when null),
 * with `WHERE key > after ORDER BY key LIMIT take`. One row past the limit says whether another page follows.
 */
export async function keysetPage<R>(
  keyset: Keyset<R>,
  q: PageQuery,
  fetch: (after: string[] | null, take: number) => Promise<R[]>,
): Promise<Page<R>> {
  const rows = await fetch(q.cursor === undefined ? null : decodeCursor(keyset, q.cursor), q.limit + 1);
  const items = rows.slice(0, q.limit);
  const last = items[items.length - 1];
  return {
    items,
    nextCursor: rows.length > q.limit && last !== undefined ? encodeCursor(keyset, keyset.keyOf(last)) : null,
  };
}
