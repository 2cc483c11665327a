import { describe, expect, it } from '@jest/globals';
import { instantOf } from '../../api/instants';

describe('instantOf, a date-time filter or expiry as the instant PostgreSQL takes', () => {
  it('reads the offset, a leap second and years before 100 as RFC 3339 says', () => {
    expect(instantOf('2026-12-07T10:00:00+15:30', 'f')).toBe('2026-12-06T18:30:00.000Z');
    // PostgreSQL refuses an offset past ±15:59; RFC 3339 allows up to 23:59.
    expect(instantOf('2026-12-07T00:00:00-23:59', 'f')).toBe('2026-12-07T23:59:00.000Z');
    expect(instantOf('2030-12-31T23:59:60Z', 'f')).toBe('2031-01-01T00:00:00.000Z');
    expect(instantOf('0042-03-04T05:06:07.891z', 'f')).toBe('0042-03-04T05:06:07.891Z');
    expect(instantOf(undefined, 'f')).toBeUndefined();
  });

  it('holds an instant an offset moves out of years 1-9999 at that end (schemathesis: year 1 at +23:09 was a 400)', () => {
    expect(instantOf('0001-01-01T00:00:00+23:09', 'f')).toBe('0001-01-01T00:00:00.000Z');
    expect(instantOf('9999-12-31T23:59:59-23:59', 'f')).toBe('9999-12-31T23:59:59.999Z');
  });

  it('names the field of a value that is no RFC 3339 date-time', () => {
    expect(() => instantOf('2026-12-07', 'querystring.from')).toThrow(
      expect.objectContaining({ message: 'querystring.from must be an RFC 3339 date-time' }),
    );
  });
});
