import { describe, expect, it, jest } from '@jest/globals';
import { ManifestCache } from '../../activities/knowledge/manifest-cache';

describe('ingestion manifest cache', () => {
  it('reads a key once for concurrent and later batches, and again after a failed read', async () => {
    const cache = new ManifestCache<string[]>(4, 60_000);
    let reads = 0;
    let fail = false;
    const read = async () => {
      reads++;
      if (fail) throw new Error('S3 is down');
      return ['a', 'b'];
    };
    const [x, y] = await Promise.all([cache.get('run1', read), cache.get('run1', read)]);
    expect(x).toEqual(['a', 'b']);
    expect(y).toBe(x);
    expect(await cache.get('run1', read)).toBe(x);
    expect(reads).toBe(1);

    fail = true;
    await expect(cache.get('run2', read)).rejects.toThrow('S3 is down');
    fail = false;
    expect(await cache.get('run2', read)).toEqual(['a', 'b']);
    expect(reads).toBe(3);
  });

  it('keeps the most recently used entries up to its bound, and drops one left idle', async () => {
    jest.useFakeTimers({ doNotFake: ['setImmediate', 'nextTick', 'queueMicrotask'] });
    try {
      const cache = new ManifestCache<string>(2, 60_000);
      const reads: string[] = [];
      const get = (key: string) =>
        cache.get(key, async () => {
          reads.push(key);
          return key;
        });
      await get('a');
      await get('b');
      await get('a'); // a is now the most recently used: c pushes b out
      await get('c');
      expect(cache.size).toBe(2);
      await get('a');
      await get('b');
      expect(reads).toEqual(['a', 'b', 'c', 'b']);

      jest.advanceTimersByTime(59_000);
      await get('b'); // used again: its idle time starts over
      jest.advanceTimersByTime(30_000);
      expect(cache.size).toBe(1); // a (last used 89 s ago) is gone, b (30 s ago) is kept
      await get('b');
      expect(reads).toEqual(['a', 'b', 'c', 'b']);
      jest.advanceTimersByTime(60_000);
      expect(cache.size).toBe(0);
    } finally {
      jest.useRealTimers();
    }
  });
});
