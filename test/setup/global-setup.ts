import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { bundleWorkflowCode } from '@temporalio/worker';
import {
  KUBECONFIG_ENV,
  startKubeCluster,
  stopKubeCluster,
  type LocalKubeCluster,
} from '../../deploy/dev/kube/cluster';
import { isAlive } from '../../deploy/dev/process';
import { randomPorts, startLocalStack, type LocalStack } from '../../deploy/dev/stack';
import { migrate } from '../../common/store/migrate';
import { createPool } from '../../common/store/pool';
import { quietLogger } from '../support/script';

declare global {
  var __llmhubStack: LocalStack | undefined;
  var __llmhubKube: LocalKubeCluster | undefined;
}

/**
 * One shared stack of real servers per test run (the machine has 2 cores): Temporal dev server,
 * PostgreSQL, S3 and the local Kubernetes control plane (kwok nodes) on free ports under .data/test/run-<pid>,
 * plus the workflow bundle built once for all workers.
 * Test files isolate themselves by task queue and tenant id.
 */
/** The real node's start phases ("[node] phase kubelet: 3s") go to the set-up's output; the rest stays in the logs. */
const nodeLog = (line: string): void => {
  if (line.startsWith('[node]')) process.stdout.write(`[global-setup] ${line}\n`);
};

export default async function globalSetup(): Promise<void> {
  const root = path.resolve(__dirname, '..', '..');
  // One folder per run, so two runs on one machine (a developer and a helper) never share servers or data.
  const runs = path.join(root, '.data', 'test');
  await mkdir(runs, { recursive: true });
  for (const old of await readdir(runs)) {
    const pid = Number(/^run-(\d+)$/.exec(old)?.[1]);
    if (pid && !isAlive(pid)) {
      // An interrupted run leaves its Kubernetes processes behind (they run in their own session).
      await stopKubeCluster({ dataDir: path.join(runs, old, 'kube') }).catch(() => undefined);
      await rm(path.join(runs, old), { recursive: true, force: true });
    }
  }
  const dataDir = path.join(runs, `run-${process.pid}`);
  const started = Date.now();
  const [stack, kube] = await Promise.all([
    startLocalStack({ dataDir, ports: await randomPorts() }),
    // The real node too (deploy/dev/kube/REAL-NODE.md): if it cannot start, only the tests that need it fail, with why.
    startKubeCluster({ dataDir: path.join(dataDir, 'kube'), fresh: true, randomPorts: true, node: true, log: nodeLog }),
  ]);
  globalThis.__llmhubStack = stack;
  globalThis.__llmhubKube = kube;
  process.env[KUBECONFIG_ENV] = kube.kubeconfigPath;
  const db = createPool(stack.env.DATABASE_URL!, 1);
  await migrate(db);
  await db.end();
  const bundle = await bundleWorkflowCode({ workflowsPath: require.resolve('../../workflows'), logger: quietLogger });
  const bundlePath = path.join(dataDir, 'workflow-bundle.js');
  await writeFile(bundlePath, bundle.code);
  Object.assign(process.env, stack.env, {
    LLMHUB_WORKFLOW_BUNDLE: bundlePath,
    LLMHUB_TEST_DATA: dataDir,
    LOG_LEVEL: 'warn',
  });
  process.stdout.write(
    `\n[global-setup] Temporal, PostgreSQL, S3, Kubernetes control plane and workflow bundle ready in ${((Date.now() - started) / 1000).toFixed(1)} s\n`,
  );
}
