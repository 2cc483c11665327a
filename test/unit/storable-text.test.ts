import { describe, expect, it } from '@jest/globals';
import { unstorableTextAt } from '../../api/plugins/storable-text';

describe('text the platform store cannot hold', () => {
  it('names the first string with a NUL or an unpaired surrogate, in values and in keys, at any depth', () => {
    expect(unstorableTextAt({ name: 'a\u0000b' }, 'body')).toBe('body.name');
    expect(unstorableTextAt({ env: { ['X\u0000']: 'v' } }, 'body')).toBe('body.env.X\u0000');
    expect(unstorableTextAt({ steps: [{ ok: 'x' }, { bad: '\ud800' }] }, 'body')).toBe('body.steps.1.bad');
    expect(unstorableTextAt({ lone: 'tail \udc00' }, 'body')).toBe('body.lone');
    expect(unstorableTextAt('\u0000', 'querystring')).toBe('querystring');
  });

  it('lets every storable value through, paired surrogates (emoji) and other control characters included', () => {
    expect(
      unstorableTextAt({ name: 'ok 😀 \t\n\u0001', n: 1, b: true, z: null, list: ['é', { deep: 'ü' }] }, 'body'),
    ).toBeUndefined();
    expect(unstorableTextAt(undefined, 'body')).toBeUndefined();
  });

  it('looks into parsed JSON and query objects only, not into an uploaded Buffer (bytes for object storage)', () => {
    expect(unstorableTextAt(Buffer.from('a\u0000b'), 'body')).toBeUndefined();
    expect(unstorableTextAt(new Uint8Array(4), 'body')).toBeUndefined();
    expect(unstorableTextAt(Object.assign(Object.create(null), { q: 'x\u0000' }), 'querystring')).toBe('querystring.q');
  });
});
