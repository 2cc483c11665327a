/**
 * Embedder evaluation (not a test): recall@5 of the held-out queries (queries.json, written by queries.ts) over the
 * committed corpus's chunks, and chunks/s embedding those chunks (batch 32, alone, median of the rounds), for each build of the default model (deploy/dev/models.ts) at each token limit.
 *
 *   npm run bench:embed [-- --max-tokens 128,256 --rounds 3]
 */
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import { parseArgs } from 'node:util';
import { Tokenizer } from '@huggingface/tokenizers';
import { OnnxEmbedder } from '../../../common/embeddings/onnx';
import { embeddingModelDir, type EmbeddingModelBuild } from '../../../deploy/dev/models';
import { runScript } from '../../support/script';
import { corpusChunks, type HeldOutQuery, QUERIES_FILE } from './corpus';

const BATCH = 32;

const dot = (a: Float32Array, b: Float32Array): number => a.reduce((s, x, i) => s + x * b[i]!, 0);

async function embedAll(e: OnnxEmbedder, texts: string[]): Promise<Float32Array[]> {
  const out: Float32Array[] = [];
  for (let i = 0; i < texts.length; i += BATCH) out.push(...(await e.embed(texts.slice(i, i + BATCH))));
  return out;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      'max-tokens': { type: 'string', default: '128,256' },
      rounds: { type: 'string', default: '3' },
    },
  });
  const limits = values['max-tokens'].split(',').map(Number);
  const queries = JSON.parse(await readFile(QUERIES_FILE, 'utf8')) as HeldOutQuery[];
  const original = await corpusChunks();
  // Held out: no indexed chunk contains a query's sentence; the chunks that did are the ones to find.
  const indexed = original.map((c) => queries.reduce((t, q) => t.split(q.sentence).join(' '), c));
  const relevant = queries.map((q) => new Set(original.flatMap((c, i) => (c.includes(q.sentence) ? [i] : []))));

  const builds: EmbeddingModelBuild[] = ['pypi', 'per-channel'];
  const dirs = await Promise.all(builds.map((b) => embeddingModelDir(b)));
  const tokenizer = new Tokenizer(
    JSON.parse(await readFile(`${dirs[0]}/tokenizer.json`, 'utf8')),
    JSON.parse(await readFile(`${dirs[0]}/tokenizer_config.json`, 'utf8')),
  );
  const lengths = indexed.map((t) => tokenizer.encode(t).ids.length).sort((a, b) => a - b);
  const pct = (p: number) => lengths[Math.min(lengths.length - 1, Math.floor((p / 100) * lengths.length))];
  console.log(
    `corpus: ${indexed.length} chunks (median ${original[Math.floor(original.length / 2)]!.length} characters), ` +
      `tokens per chunk p10/p50/p90/max ${pct(10)}/${pct(50)}/${pct(90)}/${lengths[lengths.length - 1]}, ` +
      `over 128: ${lengths.filter((l) => l > 128).length}, over 256: ${lengths.filter((l) => l > 256).length}; ` +
      `${queries.length} held-out queries`,
  );

  // One build and limit at a time (each session holds its own memory arena); the first is the reference for cosines.
  let reference: Float32Array[] | undefined;
  let referenceName = '';
  for (const [k, build] of builds.entries()) {
    for (const maxTokens of [...limits].reverse()) {
      const name = `${build} @${maxTokens}`;
      const embedder = await OnnxEmbedder.load(dirs[k]!, { maxTokens, spin: true });
      const speeds: number[] = [];
      let docs: Float32Array[] = [];
      for (let r = 0; r < Number(values.rounds); r++) {
        const t = performance.now();
        docs = await embedAll(embedder, indexed);
        speeds.push(indexed.length / ((performance.now() - t) / 1000));
      }
      if (!reference) [reference, referenceName] = [docs, name];
      const qv = await embedAll(
        embedder,
        queries.map((q) => q.query),
      );
      let hits = 0;
      let reciprocal = 0;
      qv.forEach((v, qi) => {
        const ranked = docs
          .map((d, i) => ({ i, s: dot(v, d) }))
          .sort((a, b) => b.s - a.s)
          .slice(0, 5);
        const at = ranked.findIndex((x) => relevant[qi]!.has(x.i));
        if (at >= 0) {
          hits++;
          reciprocal += 1 / (at + 1);
        }
      });
      const cosines = docs.map((d, i) => dot(d, reference![i]!));
      console.log(
        `${name.padEnd(18)} recall@5 ${((100 * hits) / queries.length).toFixed(1)}%  MRR@5 ${(reciprocal / queries.length).toFixed(3)}  ` +
          `${median(speeds).toFixed(1)} chunks/s (rounds ${speeds.map((s) => s.toFixed(1)).join(', ')})  ` +
          `cosine to ${referenceName} min ${Math.min(...cosines).toFixed(4)} mean ${(
            cosines.reduce((a, b) => a + b, 0) / cosines.length
          ).toFixed(4)}  load ${os.loadavg()[0]!.toFixed(1)}`,
      );
    }
  }
  console.log(
    `load average ${os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}, ${os.cpus().length} cores`,
  );
}

runScript(main);
