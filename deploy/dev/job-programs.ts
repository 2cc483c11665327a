/**
 * What the local job runner (deploy/dev/kube/local-jobs.ts) runs for each Job image in dev and tests, where kwok
 * pods run no containers: the reference trainer for trainer Jobs, the conversion toolchain's python for the
 * conversion images (the images' entrypoint runs the same deploy/convert/ files).
 */
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { CONVERT_PROGRAMS_DIR } from '../../common/conversion-toolchain';
import type { LocalProgram } from './kube/local-jobs';

const ROOT = path.resolve(__dirname, '..', '..');

/** The image dev and the tests give trainer Jobs; its "container" is the reference trainer (deploy/trainers/reference). */
export const REFERENCE_TRAINER_IMAGE = 'registry.invalid/llmhub/reference-trainer';

export const referenceTrainerProgram = (): LocalProgram => ({
  command: process.execPath,
  args: ['--import', 'tsx', path.join(ROOT, 'deploy', 'trainers', 'reference', 'train.ts')],
  cwd: ROOT,
});

/** The conversion toolchain's python (deploy/dev/convert/install.sh: cached venv, created on first use). */
export const conversionPython = (): string =>
  path.join(
    execFileSync('bash', [path.join(ROOT, 'deploy', 'dev', 'convert', 'install.sh')], { encoding: 'utf8' }).trim(),
    'bin',
    'python',
  );

export const conversionProgram = (): LocalProgram => ({ command: conversionPython(), cwd: CONVERT_PROGRAMS_DIR });
