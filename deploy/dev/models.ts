import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** The folder of the default embedding model, assembled offline by deploy/dev/models/install.sh. */
export async function embeddingModelDir(): Promise<string> {
  const { stdout } = await run('bash', [path.join(__dirname, 'models', 'install.sh')], { maxBuffer: 1 << 20 });
  return stdout.trim().split('\n').pop()!;
}
