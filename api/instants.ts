import { BadRequestError } from '../common/errors';

const RFC3339 = /^(\d{4})-(\d\d)-(\d\d)[tT ](\d\d):(\d\d):(\d\d)(?:\.(\d+))?(?:[zZ]|([+-])(\d\d)(?::?(\d\d))?)$/;

/**
 * The instants PostgreSQL's timestamptz and `Date.toISOString` both write as RFC 3339: a year 1-9999 date-time whose
 * offset moves it past either end (0001-01-01T00:00:00+23:09 is in year 0) is held at that end. No row is that old
 * or that new, so a filter or an expiry means the same there.
 */
const FIRST = new Date(0).setUTCFullYear(1, 0, 1); // not Date.UTC, which reads year 1 as 1901
const LAST = Date.parse('9999-12-31T23:59:59.999Z');

/**
 * A `date-time` the schema let through, as the UTC instant PostgreSQL takes: PostgreSQL refuses offsets past ±15:59
 * that RFC 3339 allows, and JavaScript's Date.parse refuses leap seconds and years before 100; so the fields are read
 * here (a leap second is the next minute's first).
 */
export function instantOf(time: string | undefined, field: string): string | undefined {
  if (time === undefined) return undefined;
  const m = RFC3339.exec(time);
  if (!m) throw new BadRequestError(`${field} must be an RFC 3339 date-time`, field);
  const [, y, mo, d, h, mi, sec, frac = '0', sign, oh = '0', om = '0'] = m;
  const at = new Date(0);
  at.setUTCFullYear(Number(y), Number(mo) - 1, Number(d));
  at.setUTCHours(Number(h), Number(mi), Number(sec), Number(frac.slice(0, 3).padEnd(3, '0')));
  const offsetMinutes = (sign === '-' ? -1 : 1) * (Number(oh) * 60 + Number(om));
  const utc = at.getTime() - (sign ? offsetMinutes : 0) * 60_000;
  return new Date(Math.min(LAST, Math.max(FIRST, utc))).toISOString();
}
