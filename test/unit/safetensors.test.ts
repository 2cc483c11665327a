import { describe, expect, test } from '@jest/globals';
import { decodeSafetensors, encodeSafetensors, SafetensorsError } from '../../deploy/trainers/reference/safetensors';

describe('safetensors', () => {
  const tensors = {
    'layers.1.bias': { shape: [2], data: new Float32Array([0.5, -0.25]) },
    'layers.0.weight': { shape: [2, 3], data: new Float32Array([1, 2, 3, 4, 5, 6]) },
  };

  test('round-trips tensors and metadata, with the data 8-byte aligned', () => {
    const bytes = encodeSafetensors(tensors, { format: 'llmhub-mlp' });
    const headerLength = Number(bytes.readBigUInt64LE(0));
    expect((8 + headerLength) % 8).toBe(0);
    const back = decodeSafetensors(bytes);
    expect(back.metadata).toEqual({ format: 'llmhub-mlp' });
    expect(back.tensors['layers.0.weight']).toEqual(tensors['layers.0.weight']);
    expect(back.tensors['layers.1.bias']).toEqual(tensors['layers.1.bias']);
  });

  test('the bytes do not depend on the order tensors were given in', () => {
    const reversed = Object.fromEntries(Object.entries(tensors).reverse());
    expect(encodeSafetensors(reversed).equals(encodeSafetensors(tensors))).toBe(true);
  });

  test('rejects a shape that does not match the data, and files that are not safetensors', () => {
    expect(() => encodeSafetensors({ w: { shape: [3], data: new Float32Array(2) } })).toThrow(SafetensorsError);
    expect(() => decodeSafetensors(Buffer.from('abc'))).toThrow(/shorter than/);
    const lying = Buffer.alloc(16);
    lying.writeBigUInt64LE(100n, 0);
    expect(() => decodeSafetensors(lying)).toThrow(/past the end/);
  });
});
