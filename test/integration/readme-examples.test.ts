import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { freePorts } from '../../deploy/dev/process';
import { readmeBlocks } from '../support/readme-blocks';
import {
  documentedAnswerErrors,
  removeSdkPackage,
  runSdkExample,
  SDK_EXAMPLE_ANSWERS,
  shapeOf,
} from '../support/sdk-example';

const ROOT = path.join(__dirname, '..', '..');
const DEV_DIR = path.join(ROOT, '.data', 'test', `readme-dev-${process.pid}`);

let dev: ChildProcess;
let api = '';
let key = '';
let log = '';
/** The SDK example against the dev stack, run beside the README's blocks (they touch other models). */
let sdkLive: Promise<Record<string, unknown>>;
/** The same against the mock: it needs no stack, so it runs (with the SDK's build) while the stack starts. */
let sdkMock: Promise<Record<string, unknown>>;

/**
 * A fresh `npm run dev` stack: deploy/dev/dev.ts, what scripts/dev.sh runs once setup.sh has installed what is missing
 * (scripts/test.sh has already sourced it), in a data dir of its own and on free ports, so it runs beside the tests'
 * shared stack and beside a developer's own `npm run dev`.
 */
beforeAll(async () => {
  await rm(DEV_DIR, { recursive: true, force: true });
  sdkMock = runSdkExample({ LLMHUB_MOCK: '1' });
  sdkMock.catch(() => undefined); // awaited (and reported) by its test
  const started = Date.now();
  const [apiPort, metricsPort] = await freePorts(2);
  api = `127.0.0.1:${apiPort}`;
  dev = spawn(process.execPath, ['--import', 'tsx', 'deploy/dev/dev.ts'], {
    cwd: ROOT,
    env: {
      ...process.env,
      NODE_OPTIONS: '',
      LLMHUB_DEV_DIR: DEV_DIR,
      LLMHUB_DEV_RANDOM_PORTS: '1',
      API_PORT: String(apiPort),
      WORKER_METRICS_PORT: String(metricsPort),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  await new Promise<void>((resolve, reject) => {
    const seen = (chunk: Buffer) => {
      log += chunk.toString();
      if (log.includes('[dev] LLMHub is up.')) resolve();
    };
    dev.stdout!.on('data', seen);
    dev.stderr!.on('data', seen);
    dev.once('exit', (code) =>
      reject(new Error(`npm run dev exited (${code}) before it was up:\n${log.slice(-4000)}`)),
    );
  });
  key = (await readFile(path.join(DEV_DIR, 'demo-admin-key'), 'utf8')).trim();
  // This file's share of the CI time, the way global-setup reports its own.
  process.stderr.write(
    `[readme-examples] npm run dev stack up and seeded in ${Math.round((Date.now() - started) / 1000)} s\n`,
  );
  sdkLive = runSdkExample({ LLMHUB_URL: `http://${api}`, KEY: key });
  sdkLive.catch(() => undefined); // awaited (and reported) by its test
}, 300_000);

afterAll(async () => {
  if (dev && dev.exitCode === null) {
    const exited = new Promise((resolve) => dev.once('exit', resolve));
    dev.kill('SIGTERM');
    await exited;
  }
  await Promise.all([rm(DEV_DIR, { recursive: true, force: true }), removeSdkPackage()]);
}, 120_000);

describe('README examples against a fresh npm run dev stack', () => {
  it('every <!-- try --> block runs as printed, in order, each operation reaching its documented end', async () => {
    // A mark before each block and after the last, so the run reports where its time goes.
    // On a line of its own: a block's last output may not end its line (the agent's file has no newline).
    const mark = (i: number) => `printf '\\n[readme-block] ${i} %s\\n' "$(date +%s%3N)"`;
    const blocks = await readmeBlocks('try');
    const script = [...blocks.flatMap((b, i) => [mark(i), b]), mark(blocks.length)].join('\n');
    const result = await new Promise<{ code: number | null; out: string }>((resolve) => {
      const sh = spawn('bash', ['-euo', 'pipefail', '-c', script], {
        cwd: ROOT,
        env: { ...process.env, NODE_OPTIONS: '', API: api, KEY: key },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      sh.stdout.on('data', (c: Buffer) => (out += c.toString()));
      sh.stderr.on('data', (c: Buffer) => (out += c.toString()));
      sh.on('exit', (code) => resolve({ code, out }));
    });
    const marks = [...result.out.matchAll(/^\[readme-block\] (\d+) (\d+)$/gm)].map((m) => Number(m[2]));
    process.stderr.write(
      `[readme-examples] blocks took ${marks
        .slice(1)
        .map((t, i) => `#${i + 1} ${Math.round((t - marks[i]!) / 1000)} s`)
        .join(', ')}\n`,
    );
    const printed = result.out.replace(/^\[readme-block\] .*\n/gm, '');
    expect({ code: result.code, tail: result.code === 0 ? '' : result.out.slice(-6000) }).toEqual({
      code: 0,
      tail: '',
    });
    // What the blocks' last commands print: the chat's completion, the pipeline's lineage, the approved write.
    expect(printed).toMatch(/"object":"chat\.completion"/);
    expect(printed).toMatch(/"lineage":\[/);
    expect(printed.trim().split('\n').at(-1)).toBe('approved');
  }, 900_000);

  it("the SDK example gives the mock's shapes against the dev stack", async () => {
    const [live, mock] = [await sdkLive, await sdkMock];
    for (const [name, method, template, status] of SDK_EXAMPLE_ANSWERS) {
      expect({ name, errors: await documentedAnswerErrors(method, template, status, live[name]) }).toEqual({
        name,
        errors: null,
      });
      expect({ name, shape: shapeOf(live[name]) }).toEqual({ name, shape: shapeOf(mock[name]) });
    }
    expect(live.deployment).toMatchObject({ phase: 'promoted' });
  }, 300_000);
});
