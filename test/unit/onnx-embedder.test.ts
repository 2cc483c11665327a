import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from '@jest/globals';
import { API_NODE_FLAGS } from '../../deploy/node-flags';
import { OnnxEmbedder } from '../../common/embeddings/onnx';
import { EmbedderRegistry } from '../../common/knowledge';
import { embeddingModelDir } from '../../deploy/dev/models';

const cosine = (a: Float32Array, b: Float32Array): number => a.reduce((s, x, i) => s + x * b[i]!, 0);

// The model runs on a thread of its own (common/embeddings/onnx-thread.ts): requests and replies cross a port.
describe('the ONNX embedder on its own thread', () => {
  it.each([1, 2])('answers concurrent requests each with its own vectors (%i session(s))', async (sessions) => {
    const embedder = await OnnxEmbedder.load(await embeddingModelDir('per-channel'), { sessions });
    const texts = ['molten rock from a volcano', 'feeding a sourdough starter', 'resetting a router password'];
    const alone: Float32Array[] = [];
    for (const t of texts) alone.push((await embedder.embed([t]))[0]!);
    const together = await Promise.all([
      embedder.embed([texts[0]!, texts[1]!]),
      embedder.embed([]),
      embedder.embed([texts[2]!]),
    ]);
    expect(together.map((r) => r.length)).toEqual([2, 0, 1]);
    // Not identical: the int8 model quantises its activations per batch, so batch-mates move a vector slightly.
    [together[0]![0]!, together[0]![1]!, together[2]![0]!].forEach((v, i) => {
      expect(v).toHaveLength(embedder.dimensions);
      const similarities = alone.map((a) => cosine(v, a));
      expect(similarities[i]).toBeGreaterThan(0.98);
      expect(Math.max(...similarities.filter((_, j) => j !== i))).toBeLessThan(0.8);
    });
    await embedder.close();
  });

  it('a model thread that ended fails its requests, and the registry loads the model again on the next use', async () => {
    const registry = new EmbedderRegistry({ EMBEDDING_MODEL_DIR: await embeddingModelDir('per-channel') });
    const first = (await registry.get('default')) as OnnxEmbedder;
    await first.close();
    await expect(first.embed(['after the end'])).rejects.toThrow(/exited/);
    const again = (await registry.get('default')) as OnnxEmbedder;
    expect(again).not.toBe(first);
    expect((await again.embed(['after the end']))[0]).toHaveLength(again.dimensions);
    await again.close();
  });

  it("loads in a process started with the API role's node flags, which a thread may not inherit", async () => {
    const script = `import { OnnxEmbedder } from './common/embeddings/onnx';
      OnnxEmbedder.load(process.argv[1]).then(async (e) => { console.log((await e.embed(['x']))[0].length); await e.close(); });`;
    const run = spawnSync(
      process.execPath,
      [
        ...API_NODE_FLAGS,
        '--import',
        'tsx',
        '--input-type=module',
        '-e',
        script,
        await embeddingModelDir('per-channel'),
      ],
      { cwd: path.resolve(__dirname, '..', '..'), encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: '' } },
    );
    expect({ status: run.status, stdout: run.stdout.trim(), stderr: run.stderr.slice(-500) }).toEqual({
      status: 0,
      stdout: '384',
      stderr: '',
    });
  });

  it('fails to load a missing model with the cause instead of waiting for the thread', async () => {
    await expect(OnnxEmbedder.load('/nonexistent/model')).rejects.toThrow(/ENOENT|no such file/);
  });
});
