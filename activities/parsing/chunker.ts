import type { Block } from './parsers';

export interface ChunkingOptions {
  /** `heading`: chunks never cross a heading (nor a page); `paragraph`: paragraphs packed up to size within a page; `fixed`: sliding window. */
  strategy: 'heading' | 'paragraph' | 'fixed';
  /** Target chunk size in characters. */
  size: number;
  /** Characters repeated between consecutive pieces of a text longer than `size`. */
  overlap: number;
}

export const DEFAULT_CHUNKING: ChunkingOptions = { strategy: 'heading', size: 1000, overlap: 150 };

export interface Chunk {
  text: string;
  page: number | null;
  heading: string | null;
  /** Offsets in the document's extracted text (blocks joined by blank lines). */
  start: number;
  end: number;
}

const SEPARATOR = '\n\n';

/** Splits one span longer than `size` into overlapping windows, preferring to cut at whitespace. */
function windows(text: string, offset: number, o: ChunkingOptions, meta: Pick<Chunk, 'page' | 'heading'>): Chunk[] {
  const out: Chunk[] = [];
  let start = 0;
  while (start < text.length) {
    let end = Math.min(text.length, start + o.size);
    if (end < text.length) {
      const cut = text.lastIndexOf(' ', end);
      if (cut > start + o.size / 2) end = cut;
    }
    out.push({ text: text.slice(start, end).trim(), start: offset + start, end: offset + end, ...meta });
    if (end >= text.length) break;
    start = Math.max(end - o.overlap, start + 1);
  }
  return out.filter((c) => c.text.length > 0);
}

export function chunkBlocks(blocks: Block[], o: ChunkingOptions = DEFAULT_CHUNKING): Chunk[] {
  let pos = 0;
  const placed = blocks.map((b) => {
    const at = pos;
    pos += b.text.length + SEPARATOR.length;
    return { ...b, start: at, end: at + b.text.length };
  });
  if (o.strategy === 'fixed') {
    const full = blocks.map((b) => b.text).join(SEPARATOR);
    return windows(full, 0, o, { page: blocks[0]?.page ?? null, heading: null }).map((c) => {
      const first = placed.find((b) => b.end > c.start);
      return { ...c, page: first?.page ?? null, heading: first?.heading ?? null };
    });
  }
  const chunks: Chunk[] = [];
  let group: typeof placed = [];
  const flush = () => {
    if (group.length === 0) return;
    const first = group[0]!;
    const last = group[group.length - 1]!;
    const text = group.map((b) => b.text).join(SEPARATOR);
    const meta = { page: first.page, heading: first.heading };
    if (text.length > o.size) chunks.push(...windows(text, first.start, o, meta));
    else chunks.push({ text, start: first.start, end: last.end, ...meta });
    group = [];
  };
  for (const b of placed) {
    const size = group.reduce((n, g) => n + g.text.length + SEPARATOR.length, 0) + b.text.length;
    const crossesHeading = o.strategy === 'heading' && group.length > 0 && b.heading !== group[0]!.heading;
    // A chunk never spans pages, so a citation's page is exact.
    const crossesPage = group.length > 0 && b.page !== group[0]!.page;
    if (group.length > 0 && (size > o.size || crossesHeading || crossesPage)) flush();
    group.push(b);
  }
  flush();
  return chunks;
}
