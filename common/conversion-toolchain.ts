import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

/**
 * The programs the conversion Jobs run, their pinned requirements and the images' Dockerfiles. Beside common/ in the
 * repository and in the build output (npm run build copies the folder to dist/deploy/convert), so the built API and
 * worker compute the same version as the sources do.
 */
export const CONVERT_PROGRAMS_DIR = path.resolve(__dirname, '..', 'deploy', 'convert');

let cached: string | undefined;

/**
 * The toolchain version in the conversion memo key and the conversion images' tag: a hash of every file of
 * deploy/convert/ (the pinned requirements among them), so a changed program or package version never serves an old
 * memoised result.
 */
export function conversionToolchainVersion(): string {
  if (cached) return cached;
  const hash = createHash('sha256');
  for (const name of readdirSync(CONVERT_PROGRAMS_DIR).sort()) {
    if (name.startsWith('.') || name === '__pycache__') continue;
    hash.update(`\0${name}\0`).update(readFileSync(path.join(CONVERT_PROGRAMS_DIR, name)));
  }
  cached = hash.digest('hex').slice(0, 16);
  return cached;
}
