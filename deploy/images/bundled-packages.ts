/**
 * The npm packages an esbuild bundle holds, for an image's pinned package list (deploy/images/manifest.ts): read from
 * the bundle's metafile, each package named once with the version of its own package.json, in `npm ls --json`'s shape.
 *
 *   node --import tsx deploy/images/bundled-packages.ts <metafile.json>
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';

const [metafile] = process.argv.slice(2);
if (!metafile) throw new Error('usage: bundled-packages.ts <metafile.json>');

const { inputs } = JSON.parse(readFileSync(metafile, 'utf8')) as { inputs: Record<string, unknown> };
const dependencies: Record<string, { version: string }> = {};
for (const input of Object.keys(inputs)) {
  // node_modules/<name>/... or node_modules/@scope/<name>/...; the innermost node_modules names the package.
  const rest = input.split('node_modules/').at(-1)!;
  if (rest === input) continue;
  const parts = rest.split('/');
  const name = parts[0]!.startsWith('@') ? `${parts[0]}/${parts[1]}` : parts[0]!;
  const dir = input.slice(0, input.length - rest.length) + name;
  dependencies[name] ??= {
    version: (JSON.parse(readFileSync(path.resolve(dir, 'package.json'), 'utf8')) as { version: string }).version,
  };
}
const sorted = Object.fromEntries(Object.entries(dependencies).sort(([a], [b]) => a.localeCompare(b)));
console.log(JSON.stringify({ name: 'bundle', dependencies: sorted }, null, 2));
