import { execFile } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const ROOT = path.resolve(__dirname, '..', '..');
const run = promisify(execFile);

/** Where deploy/images/build.sh leaves the archives. */
export const IMAGE_ARCHIVES = path.join(
  process.env.LLMHUB_CACHE ?? path.join(os.homedir(), '.cache', 'llmhub'),
  'images',
);

/** The tag deploy/images/build.sh gives this working tree's images. */
export async function imageTag(): Promise<string> {
  if (process.env.LLMHUB_IMAGE_TAG) return process.env.LLMHUB_IMAGE_TAG;
  const git = (...args: string[]) => run('git', args, { cwd: ROOT }).then((r) => r.stdout.trim());
  const dirty = await git('diff', '--quiet', 'HEAD', '--').then(
    () => '',
    () => '-dirty',
  );
  return `${await git('rev-parse', '--short=12', 'HEAD')}${dirty}`;
}

export const imageArchive = (image: string, tag: string, kind: 'oci' | 'docker' = 'oci'): string =>
  path.join(IMAGE_ARCHIVES, `${image}-${tag}.${kind}.tar`);
