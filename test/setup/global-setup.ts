import { rm } from 'node:fs/promises';
import path from 'node:path';
import { bundleWorkflowCode } from '@temporalio/worker';
import { writeFile } from 'node:fs/promises';
import { randomPorts, startLocalStack, type LocalStack } from '../../deploy/dev/stack';
import { migrate } from '../../common/store/migrate';
import { createPool } from '../../common/store/pool';

declare global {
  var __llmhubStack: LocalStack | undefined;
}

/**
 * One shared stack of real servers per test run (the machine has 2 cores): Temporal dev server,
 * PostgreSQL and S3 on free ports under .data/test, plus the workflow bundle built once for all workers.
 * Test files isolate themselves by task queue and tenant id.
 */
export default async function globalSetup(): Promise<void> {
  const root = path.resolve(__dirname, '..', '..');
  const dataDir = path.join(root, '.data', 'test');
  await rm(dataDir, { recursive: true, force: true });
  const started = Date.now();
  const stack = await startLocalStack({ dataDir, ports: await randomPorts() });
  globalThis.__llmhubStack = stack;
  const db = createPool(stack.env.DATABASE_URL!, 1);
  await migrate(db);
  await db.end();
  const bundle = await bundleWorkflowCode({ workflowsPath: require.resolve('../../workflows'), logger: quietLogger });
  const bundlePath = path.join(dataDir, 'workflow-bundle.js');
  await writeFile(bundlePath, bundle.code);
  Object.assign(process.env, stack.env, { LLMHUB_WORKFLOW_BUNDLE: bundlePath, LLMHUB_TEST_DATA: dataDir, LOG_LEVEL: 'warn' });
  process.stdout.write(`\n[global-setup] Temporal, PostgreSQL, S3 and workflow bundle ready in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
}

const noop = () => undefined;
const quietLogger = { trace: noop, debug: noop, info: noop, warn: noop, error: console.error, log: noop };
