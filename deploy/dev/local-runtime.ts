import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ApplicationFailure } from '@temporalio/common';
import type { ModelRuntime, ServedRef } from '../../activities/kubernetes';
import { loopbackEndpoints } from '../../activities/kubernetes/endpoints';
import type { ModelServerSpec } from '../../activities/kubernetes/manifests';
import { clustersOf } from '../../common/config';
import { freePort, runningPid, startProcess, tail, terminate } from './process';

/**
 * The "process" runtime of LLMHUB_CLUSTERS: each version is one local process serving the OpenAI API on its own
 * 127.0.0.1 port, for `dev` on a laptop. Its pid and port live in `stateDir`, so a restarted worker finds and reuses
 * (or stops) what an earlier one started. A dev runtime: one process per version, no resource limits, no restarts;
 * so it lives here and the dev stack hands it to the worker (deploy/dev/worker.ts), never the production build.
 */
interface ProcessRuntimeSettings {
  /** argv of a version's server; {port}, {model}, {version} and {artifactUri} are filled in. */
  command: string[];
  stateDir: string;
}

/** The repo's reference model server (a fixture that answers like vLLM), run from the repo root as the dev worker is. */
const DEFAULT_PROCESS_COMMAND = [
  process.execPath,
  '--import',
  'tsx',
  path.resolve(__dirname, 'model-server', 'main.ts'),
  ...['--port', '{port}', '--name', '{version}', '--model', '{model}'],
];

export const ProcessRuntimeErrors = { exited: 'ModelProcessExited', notRunning: 'ModelProcessNotRunning' } as const;

// Namespace and name are DNS labels (no dots), so the pair is a unique, safe file name.
const baseName = (ref: ServedRef): string => `${ref.namespace}.${ref.name}`;

/** Stops every version process recorded in `stateDir`, e.g. when `npm run dev` shuts down. */
export async function stopAllProcesses(stateDir: string): Promise<void> {
  const pidFiles = (await readdir(stateDir).catch(() => [] as string[])).filter((f) => f.endsWith('.pid'));
  await Promise.all(pidFiles.map((f) => stop(stateDir, f.slice(0, -'.pid'.length))));
}

async function stop(dir: string, name: string): Promise<void> {
  const pid = await runningPid(dir, name);
  if (pid) await terminate(pid);
  await rm(path.join(dir, `${name}.pid`), { force: true });
}

function processRuntime(settings: ProcessRuntimeSettings): ModelRuntime {
  const dir = settings.stateDir;
  const portFile = (name: string) => path.join(dir, `${name}.port`);
  /** The port of the version's process while it runs. */
  const runningPort = async (name: string): Promise<number | undefined> => {
    if (!(await runningPid(dir, name))) return undefined;
    const port = Number(await readFile(portFile(name), 'utf8').catch(() => ''));
    return port > 0 ? port : undefined;
  };
  const endpointOf = (spec: ModelServerSpec, ref: ServedRef, port: number) =>
    loopbackEndpoints({
      cluster: ref.cluster,
      tenantId: spec.tenantId,
      modelId: spec.modelId,
      version: spec.version,
      namespace: ref.namespace,
      service: ref.name,
      port,
    });

  return {
    async apply(spec, ref) {
      const name = baseName(ref);
      const running = await runningPort(name);
      if (running) return endpointOf(spec, ref, running);
      const port = await freePort();
      // The port is recorded before the start: a crash in between leaves no live pid, so the next apply starts afresh.
      await mkdir(dir, { recursive: true });
      await writeFile(portFile(name), String(port));
      const values: Record<string, string> = {
        port: String(port),
        model: spec.modelId,
        version: spec.version,
        artifactUri: spec.artifactUri,
      };
      const [command, ...args] = settings.command.map((a) =>
        a.replace(/\{(port|model|version|artifactUri)\}/g, (_, k: string) => values[k]!),
      );
      // Only the request's plain values: a tenant's model process never sees the worker's environment (database and
      // S3 credentials). Secret references need a cluster to resolve and are not passed.
      const env = Object.fromEntries(
        Object.entries(spec.env).filter((e): e is [string, string] => typeof e[1] === 'string'),
      );
      await startProcess({
        name,
        command: command!,
        args,
        dataDir: dir,
        env: { ...env, LLMHUB_MODEL_URI: spec.artifactUri },
        inheritEnv: false,
      });
      return endpointOf(spec, ref, port);
    },

    async readiness(ref) {
      const name = baseName(ref);
      const port = await runningPort(name);
      if (!port) {
        // A process that exited never becomes ready: fail now with its output rather than at the deadline.
        throw ApplicationFailure.nonRetryable(
          `the process of ${name} is not running; its log ends:\n${await tail(path.join(dir, `${name}.log`), 20)}`,
          ProcessRuntimeErrors.exited,
        );
      }
      // The OpenAI servers answer /v1/models once the model is loaded, as the Kubernetes readiness probe checks.
      const ok = await fetch(`http://127.0.0.1:${port}/v1/models`, { signal: AbortSignal.timeout(2_000) }).then(
        (r) => r.ok,
        () => false,
      );
      return { ready: ok, readyReplicas: ok ? 1 : 0, desiredReplicas: 1 };
    },

    /** 0 stops the process; a stopped version is started again by applying it, as nothing here keeps its spec. */
    async scale(ref, replicas) {
      const name = baseName(ref);
      if (replicas === 0) return stop(dir, name);
      if (!(await runningPort(name)))
        throw ApplicationFailure.nonRetryable(
          `${name} is not running; apply it to start it`,
          ProcessRuntimeErrors.notRunning,
        );
    },

    /** Stops and forgets the version; its log stays in the state dir for a look at why it was removed. */
    async delete(ref) {
      const name = baseName(ref);
      await stop(dir, name);
      await rm(portFile(name), { force: true });
    },
  };
}

/** The runtimes of the clusters that LLMHUB_CLUSTERS (`raw`) runs as local processes, as the worker's `modelRuntimeOf`. */
export function processRuntimesOf(raw: string | undefined): (cluster: string) => ModelRuntime | undefined {
  const runtimes = new Map<string, ModelRuntime>();
  for (const [cluster, c] of Object.entries(clustersOf(raw))) {
    if (c.runtime !== 'process') continue;
    runtimes.set(
      cluster,
      processRuntime({
        command: c.command ?? DEFAULT_PROCESS_COMMAND,
        stateDir: path.resolve(c.stateDir ?? path.join('.data', 'local-runtime', cluster)),
      }),
    );
  }
  return (cluster) => runtimes.get(cluster);
}
