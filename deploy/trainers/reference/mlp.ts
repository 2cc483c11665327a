import { decodeSafetensors, encodeSafetensors, type F32Tensor } from './safetensors';

/**
 * The reference model format "llmhub-mlp": one safetensors file holding `layers.{i}.weight` [out, in] and
 * `layers.{i}.bias` [out]; y = L_{n-1}(tanh(…tanh(L_0(x)))). Small enough to train with plain numerical code, so the
 * reference trainer, the conversion helper and tests share one model without a framework.
 */
export const MLP_METADATA = { format: 'llmhub-mlp', activation: 'tanh' } as const;

export interface MlpLayer {
  inputs: number;
  outputs: number;
  /** Row-major [outputs, inputs]. */
  weight: Float32Array;
  bias: Float32Array;
}
export type Mlp = MlpLayer[];

/** One dataset row: a JSONL line of the fine-tuning dataset. */
export interface Example {
  x: number[];
  y: number[];
}

export class MlpFormatError extends Error {}

export function decodeMlp(bytes: Buffer): Mlp {
  const { tensors, metadata } = decodeSafetensors(bytes);
  if (metadata.format !== MLP_METADATA.format)
    throw new MlpFormatError(`not an llmhub-mlp file (format '${metadata.format ?? ''}')`);
  const layers: Mlp = [];
  for (let i = 0; tensors[`layers.${i}.weight`]; i++) {
    const w = tensors[`layers.${i}.weight`]!;
    const b = tensors[`layers.${i}.bias`];
    const [outputs, inputs] = w.shape as [number, number];
    if (w.shape.length !== 2 || !b || b.shape.length !== 1 || b.shape[0] !== outputs)
      throw new MlpFormatError(`layer ${i}: weight [out, in] and bias [out] expected`);
    if (i > 0 && layers[i - 1]!.outputs !== inputs)
      throw new MlpFormatError(`layer ${i} takes ${inputs} inputs but layer ${i - 1} gives ${layers[i - 1]!.outputs}`);
    layers.push({ inputs, outputs, weight: w.data, bias: b.data });
  }
  if (layers.length === 0) throw new MlpFormatError('an llmhub-mlp file holds at least layers.0');
  return layers;
}

export function encodeMlp(mlp: Mlp): Buffer {
  const tensors: Record<string, F32Tensor> = {};
  mlp.forEach((l, i) => {
    tensors[`layers.${i}.weight`] = { shape: [l.outputs, l.inputs], data: l.weight };
    tensors[`layers.${i}.bias`] = { shape: [l.outputs], data: l.bias };
  });
  return encodeSafetensors(tensors, { ...MLP_METADATA });
}

/** Every layer's output, the input first: what backpropagation needs. Arithmetic in float64 over float32 weights. */
export function activations(mlp: Mlp, x: ArrayLike<number>): Float64Array[] {
  const outs: Float64Array[] = [Float64Array.from(x)];
  mlp.forEach((l, li) => {
    const input = outs[li]!;
    const out = new Float64Array(l.outputs);
    for (let o = 0; o < l.outputs; o++) {
      let s = l.bias[o]!;
      const row = o * l.inputs;
      for (let i = 0; i < l.inputs; i++) s += l.weight[row + i]! * input[i]!;
      out[o] = li === mlp.length - 1 ? s : Math.tanh(s);
    }
    outs.push(out);
  });
  return outs;
}

export const forward = (mlp: Mlp, x: ArrayLike<number>): Float64Array => activations(mlp, x).at(-1)!;

/** Mean squared error over all outputs of all rows. */
export function meanSquaredError(mlp: Mlp, rows: readonly Example[]): number {
  let sum = 0;
  let n = 0;
  for (const r of rows) {
    const y = forward(mlp, r.x);
    for (let o = 0; o < y.length; o++) {
      sum += (y[o]! - r.y[o]!) ** 2;
      n++;
    }
  }
  return n === 0 ? 0 : sum / n;
}

/** Parses a JSONL dataset; a row whose shape does not fit the model names its line. */
export function parseDataset(text: string, mlp?: Mlp): Example[] {
  const rows: Example[] = [];
  text.split('\n').forEach((line, i) => {
    if (line.trim() === '') return;
    const r = JSON.parse(line) as Example;
    const fits =
      Array.isArray(r.x) &&
      Array.isArray(r.y) &&
      (!mlp || (r.x.length === mlp[0]!.inputs && r.y.length === mlp.at(-1)!.outputs));
    if (!fits)
      throw new MlpFormatError(
        `dataset line ${i + 1}: {"x":[…], "y":[…]} matching the model's input and output sizes expected`,
      );
    rows.push(r);
  });
  return rows;
}
