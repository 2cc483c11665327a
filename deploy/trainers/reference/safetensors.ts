/**
 * The safetensors file format (https://github.com/huggingface/safetensors): an 8-byte little-endian
 * header length, a JSON header naming each tensor's dtype, shape and byte range, then the raw data.
 * It is what fine-tuned weights are published as, and it needs no framework to read, so the
 * reference trainer, the conversion tooling (Python) and tests share one format. Only F32 is used here.
 */
export interface F32Tensor {
  shape: number[];
  data: Float32Array;
}

export interface Safetensors {
  tensors: Record<string, F32Tensor>;
  metadata: Record<string, string>;
}

interface HeaderEntry {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

export class SafetensorsError extends Error {}

const elementsOf = (shape: number[]): number => shape.reduce((n, d) => n * d, 1);

export function encodeSafetensors(tensors: Record<string, F32Tensor>, metadata: Record<string, string> = {}): Buffer {
  const header: Record<string, HeaderEntry | Record<string, string>> = { __metadata__: metadata };
  let offset = 0;
  // Sorted names make the bytes (and so the content hash) independent of insertion order.
  const names = Object.keys(tensors).sort();
  for (const name of names) {
    const { shape, data } = tensors[name]!;
    if (elementsOf(shape) !== data.length)
      throw new SafetensorsError(`tensor ${name}: shape [${shape}] does not hold ${data.length} values`);
    header[name] = { dtype: 'F32', shape, data_offsets: [offset, offset + data.byteLength] };
    offset += data.byteLength;
  }
  let json = JSON.stringify(header);
  // The format pads the header with spaces so the data starts 8-byte aligned.
  json += ' '.repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8);
  const head = Buffer.from(json, 'utf8');
  const out = Buffer.alloc(8 + head.length + offset);
  out.writeBigUInt64LE(BigInt(head.length), 0);
  head.copy(out, 8);
  for (const name of names) {
    const entry = header[name] as HeaderEntry;
    const data = tensors[name]!.data;
    Buffer.from(data.buffer, data.byteOffset, data.byteLength).copy(out, 8 + head.length + entry.data_offsets[0]);
  }
  return out;
}

export function decodeSafetensors(bytes: Buffer): Safetensors {
  if (bytes.length < 8) throw new SafetensorsError('not a safetensors file: shorter than its 8-byte header length');
  const headerLength = Number(bytes.readBigUInt64LE(0));
  if (8 + headerLength > bytes.length) throw new SafetensorsError('not a safetensors file: header runs past the end');
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString('utf8')) as Record<string, unknown>;
  } catch {
    throw new SafetensorsError('not a safetensors file: header is not JSON');
  }
  const start = 8 + headerLength;
  const tensors: Record<string, F32Tensor> = {};
  for (const [name, value] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const entry = value as HeaderEntry;
    if (entry.dtype !== 'F32')
      throw new SafetensorsError(`tensor ${name}: dtype ${entry.dtype} is not supported (F32 only)`);
    const [from, to] = entry.data_offsets;
    if (to - from !== elementsOf(entry.shape) * 4 || start + to > bytes.length) {
      throw new SafetensorsError(`tensor ${name}: byte range [${from}, ${to}) does not match shape [${entry.shape}]`);
    }
    // Copy out: the file's data section need not be 4-byte aligned inside a pooled Buffer.
    const data = new Float32Array(elementsOf(entry.shape));
    Buffer.from(data.buffer).set(bytes.subarray(start + from, start + to));
    tensors[name] = { shape: entry.shape, data };
  }
  return { tensors, metadata: (header.__metadata__ as Record<string, string> | undefined) ?? {} };
}
