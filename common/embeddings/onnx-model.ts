import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import * as ort from 'onnxruntime-node';
import { l2Normalize } from './index';

/**
 * A sentence-embedding model run with onnxruntime-node: a BERT-style encoder (`model.onnx` taking
 * input_ids/attention_mask/token_type_ids, giving last_hidden_state) and its `tokenizer.json`, mean-pooled over
 * real tokens and L2-normalised, as sentence-transformers does for all-MiniLM-L6-v2. Its inference blocks the
 * calling thread (onnxruntime-node runs sessions synchronously), so it runs on the embedding thread
 * (onnx-thread.ts), never on a worker's event loop.
 */
export class OnnxModel {
  private constructor(
    private readonly session: ort.InferenceSession,
    private readonly tokenizer: Tokenizer,
    private readonly maxTokens: number,
  ) {}

  static async load(
    modelDir: string,
    opts: { maxTokens?: number; threads?: number; spin?: boolean } = {},
  ): Promise<OnnxModel> {
    const [tokenizerJson, tokenizerConfig] = await Promise.all(
      ['tokenizer.json', 'tokenizer_config.json'].map(async (f) =>
        JSON.parse(await readFile(path.join(modelDir, f), 'utf8')),
      ),
    );
    const session = await ort.InferenceSession.create(path.join(modelDir, 'model.onnx'), {
      intraOpNumThreads: opts.threads ?? 0,
      graphOptimizationLevel: 'all',
      // onnxruntime's threads spin while they wait for each other, by default: alone that makes the model ~3 % faster,
      // but beside an ingestion's other work (event loop, S3, Temporal, LanceDB on the same cores) the spinning
      // thread takes the core its partner needs and both wait: on 2 cores the model then spent 25 % more CPU per
      // chunk and the pipeline reached 33 chunks/s, against 41 without spinning (bench:ingest, 1,000 documents).
      extra: { session: { intra_op: { allow_spinning: opts.spin ? '1' : '0' } } },
    });
    return new OnnxModel(session, new Tokenizer(tokenizerJson, tokenizerConfig), opts.maxTokens ?? 256);
  }

  async run(texts: string[]): Promise<Float32Array[]> {
    if (texts.length === 0) return [];
    const encoded = texts.map((t) => {
      const ids: number[] = this.tokenizer.encode(t).ids;
      // Keep [CLS] ... [SEP] framing when truncating: the model was trained with both.
      return ids.length > this.maxTokens ? [...ids.slice(0, this.maxTokens - 1), ids[ids.length - 1]!] : ids;
    });
    const seq = Math.max(...encoded.map((e) => e.length));
    const n = texts.length;
    const ids = new BigInt64Array(n * seq);
    const mask = new BigInt64Array(n * seq);
    encoded.forEach((e, i) => {
      e.forEach((id: number, j: number) => {
        ids[i * seq + j] = BigInt(id);
        mask[i * seq + j] = 1n;
      });
    });
    const out = await this.session.run({
      input_ids: new ort.Tensor('int64', ids, [n, seq]),
      attention_mask: new ort.Tensor('int64', mask, [n, seq]),
      token_type_ids: new ort.Tensor('int64', new BigInt64Array(n * seq), [n, seq]),
    });
    const hidden = out.last_hidden_state!;
    const dim = hidden.dims[2]!;
    const data = hidden.data as Float32Array;
    return encoded.map((e, i) => {
      const v = new Float32Array(dim);
      for (let j = 0; j < e.length; j++) {
        const off = (i * seq + j) * dim;
        for (let d = 0; d < dim; d++) v[d]! += data[off + d]!;
      }
      for (let d = 0; d < dim; d++) v[d]! /= e.length;
      return l2Normalize(v);
    });
  }
}
