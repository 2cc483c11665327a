/**
 * Prints an image's pinned package list (JSON) for deploy/images/build.sh: the Debian packages of its root
 * filesystem, Node's version, the npm production tree (`npm ls --omit=dev --all --json`) and the Python packages
 * (`pip list --format=freeze`), each present only where the image has them.
 *
 *   node --import tsx deploy/images/manifest.ts <image> <revision> <dpkg list> <node version|''> <npm-ls.json|''> <freeze.txt|''>
 */
import { readFileSync } from 'node:fs';

const [image, revision, dpkgList, node, npmLs, pipFreeze] = process.argv.slice(2);
if (!image || !revision || !dpkgList) throw new Error('usage: manifest.ts <image> <revision> <dpkg list> [...]');

const lines = (file: string) =>
  readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '');

const debian = lines(dpkgList).map((l) => {
  const [pkg, arch] = l.split(' ');
  const at = pkg!.indexOf('=');
  return { name: pkg!.slice(0, at), version: pkg!.slice(at + 1), arch };
});

console.log(
  JSON.stringify(
    {
      image,
      revision,
      debian,
      node: node || null,
      npm: npmLs ? JSON.parse(readFileSync(npmLs, 'utf8')) : null,
      python: pipFreeze
        ? lines(pipFreeze).map((l) => {
            const [name, version] = l.split('==');
            return { name, version };
          })
        : null,
    },
    null,
    2,
  ),
);
