import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { cp, mkdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import Ajv from 'ajv';
import addFormats from 'ajv-formats';
import { readmeBlocks } from './readme-blocks';

const run = promisify(execFile);
const ROOT = path.join(__dirname, '..', '..');

/** This process's build of the SDK, laid out as the published package, under .data (one per process). */
const PACKAGE_ROOT = path.join(ROOT, '.data', `sdk-package-${process.pid}`);
let built: Promise<void> | undefined;
let runs = 0;

/**
 * The SDK built as it is published (its own tsconfig; dist, package.json and openapi.json) into a folder of this
 * process, so test files building it at once never read each other's half-written files.
 */
function buildPackage(): Promise<void> {
  built ??= (async () => {
    const pkg = path.join(PACKAGE_ROOT, 'node_modules', '@llmhub', 'sdk');
    await rm(PACKAGE_ROOT, { recursive: true, force: true });
    await mkdir(pkg, { recursive: true });
    await run('npx', ['tsc', '-p', path.join(ROOT, 'sdk', 'tsconfig.json'), '--outDir', path.join(pkg, 'dist')], {
      cwd: ROOT,
    });
    await Promise.all(['package.json', 'openapi.json'].map((f) => cp(path.join(ROOT, 'sdk', f), path.join(pkg, f))));
    // The SDK's own dependencies: in sdk/node_modules when not hoisted to the root's.
    if (existsSync(path.join(ROOT, 'sdk', 'node_modules')))
      await symlink(path.join(ROOT, 'sdk', 'node_modules'), path.join(pkg, 'node_modules'));
  })();
  return built;
}

export const removeSdkPackage = () => rm(PACKAGE_ROOT, { recursive: true, force: true });

/** Runs the README's SDK example as printed, importing `@llmhub/sdk` from that build; the JSON line it prints. */
export async function runSdkExample(env: NodeJS.ProcessEnv): Promise<Record<string, unknown>> {
  await buildPackage();
  const file = path.join(PACKAGE_ROOT, `example-${++runs}.mts`);
  await writeFile(file, (await readmeBlocks('sdk-example'))[0]!);
  const { stdout } = await run(process.execPath, ['--import', 'tsx', file], {
    cwd: ROOT,
    env: { ...process.env, NODE_OPTIONS: '', ...env },
    timeout: 240_000,
  });
  return JSON.parse(stdout.trim().split('\n').pop()!) as Record<string, unknown>;
}

/** Checks a value against a route's documented answer in the SDK's snapshot; the Ajv errors, or null. */
export async function documentedAnswerErrors(
  method: string,
  template: string,
  status: number,
  value: unknown,
): Promise<unknown[] | null> {
  const doc = JSON.parse(await readFile(path.join(ROOT, 'sdk', 'openapi.json'), 'utf8')) as Record<string, unknown>;
  const ajv = new Ajv({ strict: false, logger: false });
  addFormats(ajv);
  ajv.addSchema(doc, 'doc');
  const ptr = ['paths', template, method, 'responses', String(status), 'content', 'application/json', 'schema']
    .map((s) => s.replace(/~/g, '~0').replace(/\//g, '~1'))
    .join('/');
  const validate = ajv.compile({ $ref: `doc#/${ptr}` });
  return validate(value) ? null : (validate.errors ?? []);
}

/** The example's four answers and the route each is documented by. */
export const SDK_EXAMPLE_ANSWERS = [
  ['model', 'post', '/v1/models/', 201],
  ['version', 'get', '/v1/models/{modelId}/versions/{version}', 200],
  ['deploy', 'post', '/v1/deploy', 202],
  ['deployment', 'get', '/v1/deployments/{id}', 200],
] as const;

/** The keys of an answer, and of the objects it holds, the shape two answers of one route share whatever the values. */
export function shapeOf(value: unknown): unknown {
  if (Array.isArray(value)) return 'array';
  if (typeof value !== 'object' || value === null) return 'value';
  return Object.fromEntries(
    Object.keys(value)
      .sort()
      .map((k) => [k, shapeOf((value as Record<string, unknown>)[k])]),
  );
}
