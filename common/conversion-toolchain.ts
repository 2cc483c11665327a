import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

const ROOT = path.resolve(__dirname, '..');
/** The pinned requirements and the programs the conversion Jobs run (and the images are built from). */
export const CONVERT_REQUIREMENTS = path.join(ROOT, 'deploy', 'dev', 'convert', 'requirements.txt');
export const CONVERT_PROGRAMS_DIR = path.join(ROOT, 'deploy', 'convert');

let cached: string | undefined;

/**
 * The toolchain version in the conversion memo key and the conversion images' tag: a hash of the pinned requirements
 * and every file of deploy/convert/, so a changed program or package version never serves an old memoised result.
 */
export function conversionToolchainVersion(): string {
  if (cached) return cached;
  const hash = createHash('sha256').update(readFileSync(CONVERT_REQUIREMENTS));
  for (const name of readdirSync(CONVERT_PROGRAMS_DIR).sort()) {
    if (name.startsWith('.') || name === '__pycache__') continue;
    hash.update(`\0${name}\0`).update(readFileSync(path.join(CONVERT_PROGRAMS_DIR, name)));
  }
  cached = hash.digest('hex').slice(0, 16);
  return cached;
}
