/**
 * Writes queries.json, the held-out query set of the embedder evaluation (eval.ts), from the committed corpus
 * (corpus.ts), by a rule fixed before any model was scored (an inverse cloze task): from each chunk, the prose
 * sentences of 60-220 characters and at least 8 words (no table rows, code or list markers) are candidates, and
 * the middle one and the first one become queries (each sentence once). The evaluation removes every query
 * sentence from the indexed chunks, so a query must find the chunk it came from by the context around it.
 *
 *   npx tsx test/bench/embed/queries.ts
 */
import { writeFile } from 'node:fs/promises';
import { runScript } from '../../support/script';
import { corpusChunks, type HeldOutQuery, QUERIES_FILE } from './corpus';

function candidates(chunk: string): string[] {
  // Paragraphs are hard-wrapped: a sentence keeps its line breaks, so it can be cut out of the chunk as it stands.
  return chunk
    .split('\n\n')
    .filter((para) => /^[A-Za-z(]/.test(para) && !para.includes('|') && !para.includes('```'))
    .flatMap((para) => para.split(/(?<=[.!?])\s+(?=[A-Z(`])/))
    .map((s) => s.trim())
    .filter((s) => s.length >= 60 && s.length <= 220 && s.split(/\s+/).length >= 8)
    .filter((s) => (s.match(/[A-Za-z \n]/g)?.length ?? 0) / s.length >= 0.8);
}

const plain = (s: string): string =>
  s
    .replace(/\[([^\]]*)\]\([^)]*\)/g, '$1')
    .replace(/[`*_]/g, '')
    .replace(/\s+/g, ' ')
    .trim();

async function main(): Promise<void> {
  const seen = new Set<string>();
  const queries: HeldOutQuery[] = [];
  for (const chunk of await corpusChunks()) {
    const c = candidates(chunk);
    for (const sentence of [c[Math.floor(c.length / 2)], c[0]]) {
      if (sentence === undefined || seen.has(sentence)) continue;
      seen.add(sentence);
      queries.push({ sentence, query: plain(sentence) });
    }
  }
  await writeFile(QUERIES_FILE, `${JSON.stringify(queries, null, 2)}\n`);
  console.log(`${queries.length} queries written to ${QUERIES_FILE}`);
}

runScript(main);
