import { describe, expect, it } from '@jest/globals';
import { OnnxEmbedder } from '../../common/embeddings/onnx';
import { embeddingModelDir } from '../../deploy/dev/models';

const TEXTS = [
  'Molten rock and ash burst from the crater as the volcano erupted.',
  'Feed the sourdough starter, let the dough ferment overnight, then bake the loaf in a hot oven.',
  'Quarterly revenue rose nine percent while operating costs stayed flat.',
  'Hold the reset button on the router for ten seconds to restore the factory password.',
  'The rollout workflow shifts traffic to the canary and rolls back when its error rate climbs.',
];

const cosine = (a: Float32Array, b: Float32Array): number => a.reduce((s, x, i) => s + x * b[i]!, 0);

// The default embedder in dev and tests is the per-channel build (deploy/dev/models/per-channel.sh); it must stay
// a faithful copy of the PyPI model, whose vectors namespaces indexed before it was the default hold.
describe('the per-channel int8 build of the default embedding model', () => {
  it('gives vectors close to the PyPI build and ranks texts the same way', async () => {
    const [pypi, perChannel] = await Promise.all([
      embeddingModelDir('pypi').then((d) => OnnxEmbedder.load(d)),
      embeddingModelDir('per-channel').then((d) => OnnxEmbedder.load(d)),
    ]);
    expect(perChannel.dimensions).toBe(pypi.dimensions);
    const [a, b] = await Promise.all([pypi.embed(TEXTS), perChannel.embed(TEXTS)]);
    a.forEach((v, i) => expect(cosine(v, b[i]!)).toBeGreaterThan(0.97));
    const query = 'my wifi box forgot its login, how do I wipe it';
    const [qa, qb] = [(await pypi.embed([query]))[0]!, (await perChannel.embed([query]))[0]!];
    const best = (q: Float32Array, vs: Float32Array[]) =>
      vs.map((v) => cosine(q, v)).indexOf(Math.max(...vs.map((v) => cosine(q, v))));
    expect(best(qa, a)).toBe(3);
    expect(best(qb, b)).toBe(3);
  });
});
