import { execFile } from 'node:child_process';
import { mkdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import Ajv from 'ajv';
import addFormats from 'ajv-formats';
import { readmeBlocks } from './readme-blocks';

const run = promisify(execFile);
const ROOT = path.join(__dirname, '..', '..');

let built: Promise<unknown> | undefined;
let runs = 0;

/**
 * Builds the SDK as it is published (sdk/dist, by its own tsconfig), then runs the README's SDK example as printed,
 * importing `@llmhub/sdk` from that build; answers the JSON line it prints.
 */
export async function runSdkExample(env: NodeJS.ProcessEnv): Promise<Record<string, unknown>> {
  built ??= run('npx', ['tsc', '-p', path.join(ROOT, 'sdk', 'tsconfig.json')], { cwd: ROOT });
  await built;
  const dir = path.join(ROOT, '.data', `sdk-example-${process.pid}-${++runs}`);
  await rm(dir, { recursive: true, force: true });
  await mkdir(path.join(dir, 'node_modules', '@llmhub'), { recursive: true });
  await symlink(path.join(ROOT, 'sdk'), path.join(dir, 'node_modules', '@llmhub', 'sdk'));
  await writeFile(path.join(dir, 'example.mts'), (await readmeBlocks('sdk-example'))[0]!);
  try {
    const { stdout } = await run(process.execPath, ['--import', 'tsx', path.join(dir, 'example.mts')], {
      cwd: ROOT,
      env: { ...process.env, NODE_OPTIONS: '', ...env },
      timeout: 240_000,
    });
    return JSON.parse(stdout.trim().split('\n').pop()!) as Record<string, unknown>;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
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
