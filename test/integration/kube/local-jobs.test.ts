import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import type { V1Job } from '@kubernetes/client-node';
import { KUBECONFIG_ENV } from '../../../deploy/dev/kube/cluster';
import {
  LOCAL_PROCESS_ANNOTATIONS,
  imageName,
  startLocalJobRunner,
  type LocalJobRunner,
} from '../../../deploy/dev/kube/local-jobs';
import { isAlive } from '../../../deploy/dev/process';
import { createNamespace, deleteNamespace, kube, listPods, waitFor, type Kube } from './kube-helpers';

// The program stands in for a container: it records what it was given, then exits with $EXIT_WITH,
// or keeps running (and records its pid) when $EXIT_WITH is unset.
const PROGRAM = `
const fs = require('node:fs');
fs.writeFileSync(process.env.OUT, JSON.stringify({ args: process.argv.slice(1), pod: process.env.POD, secret: process.env.SECRET ?? null, pid: process.pid }));
if (process.env.EXIT_WITH === undefined) setInterval(() => undefined, 1000);
else process.exit(Number(process.env.EXIT_WITH));
`;

describe('local job runner (kwok pods with a local program)', () => {
  let k: Kube;
  let ns: string;
  let dir: string;
  let runner: LocalJobRunner;

  beforeAll(async () => {
    k = kube();
    ns = await createNamespace(k, 'local-jobs');
    await k.core.createNamespacedSecret({
      namespace: ns,
      body: { metadata: { name: 'job-secret' }, stringData: { token: 'from-the-secret' } },
    });
    dir = await mkdtemp(path.join(os.tmpdir(), 'llmhub-local-jobs-'));
    runner = await startLocalJobRunner({
      kubeconfigPath: process.env[KUBECONFIG_ENV]!,
      images: { 'registry.invalid/llmhub/echo': { command: process.execPath, args: ['-e', PROGRAM, '--'] } },
      logDir: path.join(dir, 'logs'),
    });
  }, 120_000);

  afterAll(async () => {
    await runner?.stop();
    if (k && ns) await deleteNamespace(k, ns);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  function job(name: string, env: Record<string, string>): V1Job {
    return {
      metadata: { name, namespace: ns },
      spec: {
        backoffLimit: 0,
        template: {
          metadata: { annotations: { ...LOCAL_PROCESS_ANNOTATIONS } },
          spec: {
            restartPolicy: 'Never',
            containers: [
              {
                name: 'main',
                image: 'registry.invalid/llmhub/echo:1.0',
                args: ['--step', 'export'],
                env: [
                  ...Object.entries(env).map(([name, value]) => ({ name, value })),
                  { name: 'POD', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
                  // Resolved from the pod's namespace, as a kubelet does (the tenant's S3 keys reach Jobs this way).
                  { name: 'SECRET', valueFrom: { secretKeyRef: { name: 'job-secret', key: 'token' } } },
                ],
              },
            ],
          },
        },
      },
    };
  }

  const jobCondition = (name: string) =>
    waitFor(`job ${name} finished`, async () => {
      const j = await k.batch.readNamespacedJob({ name, namespace: ns });
      return j.status?.conditions?.find((c) => (c.type === 'Complete' || c.type === 'Failed') && c.status === 'True')
        ?.type;
    });

  test('image names lose their tag and digest, not their registry port', () => {
    expect(imageName('registry:5000/llmhub/trainer:1.2@sha256:abc')).toBe('registry:5000/llmhub/trainer');
    expect(imageName('llmhub/trainer')).toBe('llmhub/trainer');
  });

  test('a Job runs its program with the container env and args, and completes when it exits 0', async () => {
    const out = path.join(dir, 'ok.json');
    await k.batch.createNamespacedJob({ namespace: ns, body: job('ok', { OUT: out, EXIT_WITH: '0' }) });
    expect(await jobCondition('ok')).toBe('Complete');
    const seen = JSON.parse(await readFile(out, 'utf8')) as { args: string[]; pod: string; secret: string | null };
    expect(seen.args).toEqual(['--step', 'export']);
    expect(seen.pod).toMatch(/^ok-/);
    expect(seen.secret).toBe('from-the-secret');
  });

  test('a non-zero exit fails the pod with that exit code', async () => {
    await k.batch.createNamespacedJob({
      namespace: ns,
      body: job('bad', { OUT: path.join(dir, 'bad.json'), EXIT_WITH: '3' }),
    });
    expect(await jobCondition('bad')).toBe('Failed');
    const [pod] = await listPods(k, ns, 'job-name=bad');
    expect(pod?.status?.phase).toBe('Failed');
    expect(pod?.status?.containerStatuses?.[0]?.state?.terminated?.exitCode).toBe(3);
  });

  test('deleting the pod kills its program, as losing the node kills the container', async () => {
    const out = path.join(dir, 'forever.json');
    await k.batch.createNamespacedJob({ namespace: ns, body: job('forever', { OUT: out }) });
    const pid = await waitFor(
      'program started',
      async () => (JSON.parse(await readFile(out, 'utf8')) as { pid: number }).pid,
    );
    expect(isAlive(pid)).toBe(true);
    const [pod] = await listPods(k, ns, 'job-name=forever');
    expect(pod?.status?.phase).toBe('Running');
    await k.core.deleteNamespacedPod({ name: pod!.metadata!.name!, namespace: ns });
    await waitFor('program killed', async () => !isAlive(pid));
  });
});
