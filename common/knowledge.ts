import os from 'node:os';
import path from 'node:path';
import type { Config } from './config';
import type { Embedder } from './embeddings';
import { OnnxEmbedder } from './embeddings/onnx';
import { OpenAiEmbedder } from './embeddings/openai';
import type { VectorStore } from './vectors';
import { LanceDbVectorStore } from './vectors/lancedb';
import { QdrantVectorStore } from './vectors/qdrant';

export async function vectorStoreFromConfig(
  c: Pick<Config, 'VECTOR_STORE' | 'LANCEDB_DIR' | 'QDRANT_URL' | 'QDRANT_API_KEY'>,
): Promise<VectorStore> {
  if (c.VECTOR_STORE === 'qdrant') {
    if (!c.QDRANT_URL) throw new Error('VECTOR_STORE=qdrant needs QDRANT_URL');
    return new QdrantVectorStore(c.QDRANT_URL, c.QDRANT_API_KEY);
  }
  return LanceDbVectorStore.open(path.resolve(c.LANCEDB_DIR));
}

export class UnknownEmbedderError extends Error {}

/**
 * How the default model runs: two sessions, each on a thread of its own with half the cores, each taking whole
 * batches. One session sharing every core idles a core whenever its intra-op threads hand off to each other (it got
 * 1.6 of 2 cores in bench:ingest without spinning, and spinning beside the pipeline cost more than it gained); two
 * sessions keep both busy with batches of their own, at the memory of a second session.
 */
export const DEFAULT_MODEL_SHAPE = {
  sessions: 2,
  threads: Math.max(1, Math.floor(os.availableParallelism() / 2)),
};

/**
 * Embedders by name, each loaded once on first use: `default` is the in-process ONNX model,
 * `openai:<model>` an OpenAI-compatible endpoint. Secrets (EMBEDDINGS_API_KEY) stay in the process env.
 */
export class EmbedderRegistry {
  private loaded = new Map<string, Promise<Embedder>>();

  constructor(private readonly c: Pick<Config, 'EMBEDDING_MODEL_DIR' | 'EMBEDDINGS_URL' | 'EMBEDDINGS_API_KEY'>) {}

  names(): string[] {
    return [...(this.c.EMBEDDING_MODEL_DIR ? ['default'] : []), ...(this.c.EMBEDDINGS_URL ? ['openai:<model>'] : [])];
  }

  /** The names check() accepts, as a JSON Schema pattern: none at all where no embedder is configured. */
  pattern(): string {
    const names = [...(this.c.EMBEDDING_MODEL_DIR ? ['default'] : []), ...(this.c.EMBEDDINGS_URL ? ['openai:.+'] : [])];
    return names.length ? `^(?:${names.join('|')})$` : '[^\\s\\S]';
  }

  /** Throws UnknownEmbedderError for a name this deployment cannot serve (bad input, not a crash). */
  check(name: string): void {
    if (name === 'default' && this.c.EMBEDDING_MODEL_DIR) return;
    if (name.startsWith('openai:') && name.length > 7 && this.c.EMBEDDINGS_URL) return;
    throw new UnknownEmbedderError(
      `unknown embedder '${name}'; available: ${this.names().join(', ') || 'none configured'}`,
    );
  }

  get(name: string): Promise<Embedder> {
    this.check(name);
    let e = this.loaded.get(name);
    if (!e) {
      e =
        name === 'default'
          ? OnnxEmbedder.load(this.c.EMBEDDING_MODEL_DIR!, {
              id: 'minilm-l6-v2-int8',
              ...DEFAULT_MODEL_SHAPE,
              // A model thread that died fails every request: the next use loads it again instead.
              onEnd: () => {
                if (this.loaded.get(name) === e) this.loaded.delete(name);
              },
            })
          : OpenAiEmbedder.connect(this.c.EMBEDDINGS_URL!, name.slice('openai:'.length), this.c.EMBEDDINGS_API_KEY);
      this.loaded.set(name, e);
      e.catch(() => this.loaded.delete(name));
    }
    return e;
  }
}
