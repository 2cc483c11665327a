/**
 * The local job runner: the one place where dev and tests give kwok pods a real workload.
 *
 * kwok pods run no containers, so the work of a Job (a trainer, a conversion step) would never happen on the
 * local control plane. Pods annotated `llmhub.dev/kwok-behaviour: local-process` stay Running (kwok-stages.yaml);
 * this runner watches them and, once one is Running on a node, starts the local program mapped to its image with
 * the container's environment. When the program exits it writes the exit code into the pod annotation
 * `llmhub.dev/local-exit-code`, and kwok turns the pod Succeeded or Failed with that code, so the Job controller
 * and the platform see the same pod lifecycle a real kubelet would give. A pod that is deleted (eviction, node
 * loss) has its program killed, like a container on a lost node.
 *
 * The platform knows nothing of this: its Jobs only carry the configured pod annotations
 * (`jobPodAnnotations` of the cluster in LLMHUB_CLUSTERS).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import {
  CoreV1Api,
  makeInformer,
  PatchStrategy,
  setHeaderOptions,
  type Informer,
  type V1EnvVar,
  type V1Pod,
} from '@kubernetes/client-node';
import { loadKubeConfig } from './cluster';

export const LOCAL_PROCESS_ANNOTATIONS = { 'llmhub.dev/kwok-behaviour': 'local-process' } as const;
const BEHAVIOUR = 'llmhub.dev/kwok-behaviour';
const EXIT_CODE = 'llmhub.dev/local-exit-code';

export interface LocalProgram {
  command: string;
  /** Put before the container's own args. */
  args?: string[];
  cwd?: string;
}

export interface LocalJobRunnerOptions {
  kubeconfigPath: string;
  /** Image name without tag or digest -> the local program that stands in for it. */
  images: Record<string, LocalProgram>;
  /** Each pod's program writes its output to <logDir>/<namespace>_<pod>.log. */
  logDir: string;
  /** Told about what the runner does, e.g. for a test's diagnostics. */
  onEvent?: (message: string) => void;
}

export interface LocalJobRunner {
  stop(): Promise<void>;
}

/** `registry:5000/llmhub/trainer:1.2@sha256:…` -> `registry:5000/llmhub/trainer`. */
export function imageName(image: string): string {
  const withoutDigest = image.split('@')[0]!;
  const lastSlash = withoutDigest.lastIndexOf('/');
  const colon = withoutDigest.indexOf(':', lastSlash + 1);
  return colon < 0 ? withoutDigest : withoutDigest.slice(0, colon);
}

/** The downward-API fields a trainer may ask for; anything else a local run cannot know. */
function fieldOf(pod: V1Pod, fieldPath: string): string | undefined {
  switch (fieldPath) {
    case 'metadata.name':
      return pod.metadata?.name;
    case 'metadata.namespace':
      return pod.metadata?.namespace;
    case 'metadata.uid':
      return pod.metadata?.uid;
    case 'spec.nodeName':
      return pod.spec?.nodeName;
    default:
      return undefined;
  }
}

/** As the kubelet builds it: literal values, downward-API fields, and Secret keys read from the pod's namespace. */
async function environmentOf(core: CoreV1Api, pod: V1Pod, env: V1EnvVar[] = []): Promise<NodeJS.ProcessEnv> {
  const out: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: process.env.HOME };
  for (const { name, value, valueFrom } of env) {
    if (value !== undefined) out[name] = value;
    else if (valueFrom?.fieldRef) out[name] = fieldOf(pod, valueFrom.fieldRef.fieldPath);
    else if (valueFrom?.secretKeyRef) {
      const { name: secret, key } = valueFrom.secretKeyRef;
      const data = (await core.readNamespacedSecret({ name: secret ?? '', namespace: pod.metadata!.namespace! })).data;
      const encoded = data?.[key];
      if (encoded !== undefined) out[name] = Buffer.from(encoded, 'base64').toString('utf8');
    }
  }
  return out;
}

export async function startLocalJobRunner(options: LocalJobRunnerOptions): Promise<LocalJobRunner> {
  await mkdir(options.logDir, { recursive: true });
  const kc = loadKubeConfig(options.kubeconfigPath);
  const core = kc.makeApiClient(CoreV1Api);
  const running = new Map<string, ChildProcess>();
  // Pods whose program was started once; a pod runs its program at most once, as a container without restarts.
  const started = new Set<string>();
  const tell = options.onEvent ?? (() => undefined);
  let stopping = false;

  const reportExit = async (pod: V1Pod, code: number) => {
    const { name, namespace } = pod.metadata!;
    try {
      await core.patchNamespacedPod(
        { name: name!, namespace: namespace!, body: { metadata: { annotations: { [EXIT_CODE]: String(code) } } } },
        setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
      );
    } catch (err) {
      // Gone already (deleted while exiting): nothing left to report to.
      tell(`could not report exit ${code} of ${namespace}/${name}: ${(err as Error).message}`);
    }
  };

  const launch = async (pod: V1Pod) => {
    const uid = pod.metadata!.uid!;
    const container = pod.spec!.containers[0]!;
    const program = options.images[imageName(container.image ?? '')];
    if (!program) return;
    started.add(uid);
    const env = await environmentOf(core, pod, container.env);
    const { name, namespace } = pod.metadata!;
    const log = createWriteStream(path.join(options.logDir, `${namespace}_${name}.log`), { flags: 'a' });
    const child = spawn(program.command, [...(program.args ?? []), ...(container.args ?? [])], {
      cwd: program.cwd,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout!.pipe(log, { end: false });
    child.stderr!.pipe(log, { end: false });
    running.set(uid, child);
    tell(`started ${namespace}/${name} (pid ${child.pid})`);
    child.on('error', (err) => log.write(`[local-job-runner] could not start ${program.command}: ${err.message}\n`));
    child.on('close', (code, signal) => {
      log.end();
      const killed = !running.has(uid);
      running.delete(uid);
      tell(`exited ${namespace}/${name} code=${code} signal=${signal}${killed ? ' (pod gone)' : ''}`);
      // 127: the program could not be started, as a shell reports it; 128+n: ended by signal n.
      if (!killed && !stopping) void reportExit(pod, code ?? (signal ? 128 + (signal === 'SIGKILL' ? 9 : 15) : 127));
    });
  };

  const kill = (pod: V1Pod) => {
    const uid = pod.metadata?.uid;
    const child = uid ? running.get(uid) : undefined;
    if (!child) return;
    running.delete(uid!);
    child.kill('SIGKILL');
  };

  const consider = (pod: V1Pod) => {
    if (pod.metadata?.annotations?.[BEHAVIOUR] !== LOCAL_PROCESS_ANNOTATIONS[BEHAVIOUR]) return;
    if (pod.metadata.deletionTimestamp) return kill(pod);
    const uid = pod.metadata.uid!;
    if (pod.status?.phase === 'Running' && !pod.metadata.annotations[EXIT_CODE] && !started.has(uid))
      launch(pod).catch((err: unknown) => {
        // Like a container whose configuration cannot be built (a missing Secret): it never runs.
        tell(`could not start ${pod.metadata?.namespace}/${pod.metadata?.name}: ${(err as Error).message}`);
        void reportExit(pod, 127);
      });
  };

  const informer: Informer<V1Pod> = makeInformer(kc, '/api/v1/pods', () => core.listPodForAllNamespaces());
  informer.on('add', consider);
  informer.on('update', consider);
  informer.on('delete', kill);
  informer.on('error', (err: unknown) => {
    if (stopping) return;
    tell(`pod watch failed, restarting: ${(err as Error)?.message ?? err}`);
    // The informer stops on error; start it again after a pause so a restarting API server is not hammered.
    setTimeout(() => void (stopping ? undefined : informer.start().catch(() => undefined)), 1000).unref();
  });
  await informer.start();

  return {
    async stop() {
      stopping = true;
      await informer.stop();
      const exits = [...running.values()].map((child) => new Promise((resolve) => child.once('close', resolve)));
      for (const child of running.values()) child.kill('SIGKILL');
      running.clear();
      await Promise.all(exits);
    },
  };
}
