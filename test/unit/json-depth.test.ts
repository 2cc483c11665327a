import { describe, expect, it } from '@jest/globals';
import { MAX_JSON_DEPTH, nestsTooDeep } from '../../api/json-depth';

const nested = (depth: number, open = '[', close = ']') => `${open.repeat(depth)}${close.repeat(depth)}`;
const check = (text: string) => nestsTooDeep(JSON.parse(text), text);

describe('nestsTooDeep', () => {
  it('counts the top level as 1 and refuses one level past the maximum, arrays and objects alike', () => {
    expect(check(nested(MAX_JSON_DEPTH))).toBe(false);
    expect(check(nested(MAX_JSON_DEPTH + 1))).toBe(true);
    const objects = (depth: number) => `${'{"a":'.repeat(depth - 1)}{}${'}'.repeat(depth - 1)}`;
    expect(check(objects(MAX_JSON_DEPTH))).toBe(false);
    expect(check(objects(MAX_JSON_DEPTH + 1))).toBe(true);
    expect(check(`{"a": [${'{"b":'.repeat(MAX_JSON_DEPTH)}1${'}'.repeat(MAX_JSON_DEPTH)}]}`)).toBe(true);
  });

  it('takes many brackets side by side for what they are, and walks 100,000 levels without recursion', () => {
    expect(check(JSON.stringify({ messages: Array.from({ length: 5_000 }, () => ({ content: [1] })) }))).toBe(false);
    // Brackets inside strings only make the walk happen; the value decides.
    expect(check(JSON.stringify({ text: '['.repeat(10_000) }))).toBe(false);
    expect(check(nested(100_000))).toBe(true);
    expect(nestsTooDeep('[[[', '"[[["')).toBe(false);
    expect(nestsTooDeep(null, 'null')).toBe(false);
  });
});
