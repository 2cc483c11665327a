import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { chunkBlocks, DEFAULT_CHUNKING } from '../../../activities/parsing/chunker';
import { parseBuiltin } from '../../../activities/parsing/parsers';

/**
 * The retrieval corpus of the embedder evaluation: corpus.md, a frozen copy of this project's README (commit
 * 7e53de6, the project's own text and licence), chunked as an ingestion does by default (heading, 1,000 characters,
 * 150 overlap), each chunk's text as the ingest activity embeds it (heading first).
 */
export async function corpusChunks(): Promise<string[]> {
  const file = path.join(__dirname, 'corpus.md');
  const chunks = chunkBlocks(await parseBuiltin(file, await readFile(file)), DEFAULT_CHUNKING);
  return chunks.map((c) => (c.heading && !c.text.startsWith(c.heading) ? `${c.heading}\n${c.text}` : c.text));
}

export interface HeldOutQuery {
  /** The sentence as it stands in the corpus: removed from every indexed chunk, so the query is held out. */
  sentence: string;
  /** The query sent: the sentence without Markdown marks. */
  query: string;
}

export const QUERIES_FILE = path.join(__dirname, 'queries.json');
