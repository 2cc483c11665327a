import { describe, expect, it } from '@jest/globals';
import { chunkBlocks } from '../../activities/parsing/chunker';

const blocks = [
  { text: 'Intro', page: 1, heading: 'Intro' },
  { text: 'a'.repeat(50), page: 1, heading: 'Intro' },
  { text: 'Usage', page: 1, heading: 'Usage' },
  { text: 'b'.repeat(50), page: 2, heading: 'Usage' },
];

describe('chunkBlocks', () => {
  it('keeps heading chunks apart and never spans pages', () => {
    const chunks = chunkBlocks(blocks, { strategy: 'heading', size: 1000, overlap: 0 });
    expect(chunks.map((c) => [c.heading, c.page])).toEqual([
      ['Intro', 1],
      ['Usage', 1],
      ['Usage', 2],
    ]);
  });

  it('gives offsets into the joined text that slice back to the chunk', () => {
    const full = blocks.map((b) => b.text).join('\n\n');
    for (const c of chunkBlocks(blocks, { strategy: 'paragraph', size: 60, overlap: 0 }))
      expect(full.slice(c.start, c.end).trim()).toBe(c.text);
  });

  it('splits text longer than the size into overlapping windows', () => {
    const long = [{ text: Array.from({ length: 100 }, (_, i) => `word${i}`).join(' '), page: null, heading: null }];
    const chunks = chunkBlocks(long, { strategy: 'fixed', size: 120, overlap: 30 });
    expect(chunks.length).toBeGreaterThan(3);
    for (const c of chunks) expect(c.text.length).toBeLessThanOrEqual(120);
    for (let i = 1; i < chunks.length; i++) expect(chunks[i]!.start).toBeLessThan(chunks[i - 1]!.end);
  });
});
