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

const TIME = /^[1-9]\d{3}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/;
/**
 * The kinds of sort-key part a cursor carries. Each is checked before it reaches SQL, so a forged cursor is a 400 and
 * never a database error (a NUL in text, a 30th of February).
 */
export const KeyPart = {
  time: (v: string) => {
    if (!TIME.test(v)) return false;
    const t = Date.parse(`${v.slice(0, 23)}Z`);
    return !Number.isNaN(t) && new Date(t).toISOString().slice(0, 23) === v.slice(0, 23);
  },
  text: (v: string) => v.length <= 1024 && !v.includes('\u0000'),
  bigint: (v: string) => /^\d{1,18}$/.test(v),
};

/**
 * How one list sorts: its name, so another list's cursor is refused, and the parts of its unique sort key. A cursor
 * holds only these: never a tenant, which every query takes from the caller's credentials.
 */
export interface Keyset<R> {
  list: string;
  parts: ReadonlyArray<(v: string) => boolean>;
  keyOf: (row: R) => string[];
}

export const encodeCursor = (list: string, key: string[]) =>
  Buffer.from(JSON.stringify([list, ...key])).toString('base64url');

/** The sort key a cursor of this list holds; 400 naming querystring.cursor for anything this API did not give out. */
export function decodeCursor(keyset: Pick<Keyset<unknown>, 'list' | 'parts'>, cursor: string): string[] {
  try {
    const v: unknown = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
    if (
      Array.isArray(v) &&
      v.length === keyset.parts.length + 1 &&
      v[0] === keyset.list &&
      keyset.parts.every((ok, i) => typeof v[i + 1] === 'string' && ok(v[i + 1] as string))
    )
      return v.slice(1) as string[];
  } catch {
    // reported below
  }
  throw new BadRequestError('cursor is not one this list gave out', 'querystring.cursor');
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
    nextCursor: rows.length > q.limit && last !== undefined ? encodeCursor(keyset.list, keyset.keyOf(last)) : null,
  };
}
