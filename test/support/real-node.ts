import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { importNodeImages, realNodeError } from '../../deploy/dev/kube/cluster';

const run = promisify(execFile);
const ROOT = path.resolve(__dirname, '..', '..');

/** The run's local cluster data dir, where jest's global set-up started the control plane and the real node. */
const kubeDataDir = (): string => {
  const data = process.env.LLMHUB_TEST_DATA;
  if (!data) throw new Error('LLMHUB_TEST_DATA is not set: jest global setup starts the local cluster');
  return path.join(data, 'kube');
};

/**
 * The real node of the run's cluster (deploy/dev/kube/REAL-NODE.md) with the reference model server's image imported.
 * Throws, failing the test, with the reason the node did not start: a test that needs containers is never skipped.
 */
export async function realNode(): Promise<{ modelServerImage: string; kubectl(...args: string[]): Promise<string> }> {
  const dataDir = kubeDataDir();
  const why = await realNodeError(dataDir);
  if (why) throw new Error(`the real node is not running: ${why}`);
  const { stdout } = await run('bash', [path.join(ROOT, 'deploy/dev/kube/model-server-image.sh')], {
    maxBuffer: 16 * 1024 * 1024,
  });
  const [archive, modelServerImage] = stdout.trim().split(/\s+/).slice(-2);
  await importNodeImages([archive!], { dataDir });
  const { stdout: bin } = await run('bash', [path.join(ROOT, 'deploy/dev/kube/build.sh'), '--print-bin-dir']);
  return {
    modelServerImage: modelServerImage!,
    kubectl: async (...args) =>
      (
        await run(path.join(bin.trim(), 'kubectl'), ['--kubeconfig', path.join(dataDir, 'kubeconfig'), ...args], {
          maxBuffer: 64 * 1024 * 1024,
        })
      ).stdout,
  };
}
