// Node-side handle on the local Kubernetes control plane (etcd, kube-apiserver,
// controller-manager, scheduler, kwok) that deploy/dev/kube/cluster.sh runs. The shell script
// owns process management so that `dev`, CI and jest's global setup share one implementation.
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { freePorts } from '../process';
import * as path from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';

/** Env var through which jest's global setup hands the kubeconfig path to test files. */
export const KUBECONFIG_ENV = 'KUBECONFIG_LLMHUB';

const CLUSTER_SH = path.join(__dirname, 'cluster.sh');
const BUILD_SH = path.join(__dirname, 'build.sh');
const NODE_SH = path.join(__dirname, 'node.sh');

export interface KubeClusterOptions {
  /** State dir (certificates, etcd data, logs, kubeconfig). Default `${LLMHUB_DATA:-<repo>/.data}/kube`. */
  dataDir?: string;
  /** Wipe the cluster state (etcd) before starting, so a test run never sees leftovers. */
  fresh?: boolean;
  /**
   * Ports on 127.0.0.1; unset ones take cluster.sh's defaults (apiserver 6443, etcd 12379/12380,
   * controller-manager 10357, scheduler 10359), or free ports with `randomPorts` (test runs,
   * so a dev cluster on the default ports can keep running). Ignored when the cluster in
   * `dataDir` is already running: it keeps the ports it was started with.
   */
  ports?: KubePorts;
  randomPorts?: boolean;
  /**
   * Also start the real node (node.sh, REAL-NODE.md) beside the kwok nodes. When it cannot start, the cluster still
   * starts and `realNodeError` says why.
   */
  node?: boolean;
  /** Seconds cluster.sh waits for each component once binaries are built. Default 180. */
  startTimeoutSeconds?: number;
  /** Receives the scripts' progress lines (build output, start time). Default: discarded. */
  log?: (line: string) => void;
}

export interface KubePorts {
  apiserver?: number;
  etcd?: number;
  etcdPeer?: number;
  controllerManager?: number;
  scheduler?: number;
}

export interface LocalKubeCluster {
  readonly kubeconfigPath: string;
  readonly dataDir: string | undefined;
  kubeConfig(): KubeConfig;
  stop(): Promise<void>;
}

function scriptEnv(opts: KubeClusterOptions): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  const set = (name: string, value: string | number | undefined): void => {
    if (value !== undefined) env[name] = String(value);
  };
  set('LLMHUB_KUBE_DATA_DIR', opts.dataDir);
  set('LLMHUB_KUBE_APISERVER_PORT', opts.ports?.apiserver);
  set('LLMHUB_KUBE_ETCD_PORT', opts.ports?.etcd);
  set('LLMHUB_KUBE_ETCD_PEER_PORT', opts.ports?.etcdPeer);
  set('LLMHUB_KUBE_CONTROLLER_MANAGER_PORT', opts.ports?.controllerManager);
  set('LLMHUB_KUBE_SCHEDULER_PORT', opts.ports?.scheduler);
  set('LLMHUB_KUBE_START_TIMEOUT', opts.startTimeoutSeconds);
  if (opts.node) env.LLMHUB_KUBE_NODE = '1';
  return env;
}

function run(script: string, args: string[], opts: KubeClusterOptions): Promise<string> {
  return new Promise((resolve, reject) => {
    // No timeout here: a cold build takes many minutes and the script bounds its own waits.
    execFile(
      'bash',
      [script, ...args],
      { env: scriptEnv(opts), maxBuffer: 64 * 1024 * 1024 },
      (err, stdout, stderr) => {
        if (opts.log) {
          for (const line of stderr.split('\n')) if (line.trim() !== '') opts.log(line);
        }
        if (err) {
          const tail = stderr.split('\n').slice(-40).join('\n');
          reject(new Error(`${path.basename(script)} ${args.join(' ')} failed: ${err.message}\n${tail}`));
          return;
        }
        resolve(stdout.trim());
      },
    );
  });
}

async function withRandomPorts(opts: KubeClusterOptions): Promise<KubeClusterOptions> {
  if (!opts.randomPorts) return opts;
  const [apiserver, etcd, etcdPeer, controllerManager, scheduler] = await freePorts(5);
  return { ...opts, ports: { apiserver, etcd, etcdPeer, controllerManager, scheduler, ...opts.ports } };
}

/** Loads a kubeconfig file (the local cluster's or any other, e.g. a real cluster's). */
export function loadKubeConfig(kubeconfigPath: string): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromFile(kubeconfigPath);
  return kc;
}

/** Builds (or finds cached) control-plane binaries without starting anything. */
export async function buildKubeBinaries(opts: KubeClusterOptions = {}): Promise<void> {
  await run(BUILD_SH, [], opts);
}

/**
 * Starts the local cluster, or attaches to the one already running from the same data dir.
 * Resolves once the API server is ready, the fake nodes are Ready and the controllers work.
 */
export async function startKubeCluster(options: KubeClusterOptions = {}): Promise<LocalKubeCluster> {
  const opts = await withRandomPorts(options);
  const out = await run(CLUSTER_SH, opts.fresh ? ['start', '--fresh'] : ['start'], opts);
  const kubeconfigPath = out.split('\n').pop() ?? '';
  if (!path.isAbsolute(kubeconfigPath)) {
    throw new Error(`cluster.sh start printed no kubeconfig path (got ${JSON.stringify(out)})`);
  }
  return {
    kubeconfigPath,
    dataDir: opts.dataDir,
    kubeConfig: () => loadKubeConfig(kubeconfigPath),
    stop: () => stopKubeCluster(opts),
  };
}

/** Stops every process of the cluster in the given data dir; a no-op when none runs. */
export async function stopKubeCluster(opts: Pick<KubeClusterOptions, 'dataDir' | 'log'> = {}): Promise<void> {
  await run(CLUSTER_SH, ['stop'], opts);
}

/**
 * An LLMHUB_CLUSTERS entry for the real node (REAL-NODE.md): its model servers go to `real-0` (label and taint), and the
 * gateway reaches them at their Services' ClusterIPs, which the host routes into the node's namespace.
 */
export const realNodeCluster = (kubeconfig: string) => ({
  kubeconfig,
  nodeSelector: { 'llmhub.dev/node-kind': 'real' },
  tolerations: [{ key: 'llmhub.dev/real-node', operator: 'Exists' as const, effect: 'NoSchedule' as const }],
  serviceAddress: 'clusterIP' as const,
});

/** Why the real node of the cluster in `dataDir` did not start; undefined when it runs. */
export async function realNodeError(dataDir: string): Promise<string | undefined> {
  const error = await readFile(path.join(dataDir, 'run', 'node.error'), 'utf8').catch(() => undefined);
  if (error !== undefined) return error.trim() || 'node.sh start failed';
  const slot = await readFile(path.join(dataDir, 'run', 'node.env'), 'utf8').catch(() => undefined);
  return slot === undefined ? 'the cluster was started without its real node (LLMHUB_KUBE_NODE=1)' : undefined;
}

/** Imports image archives (docker-archive or OCI) into the real node's containerd. */
export async function importNodeImages(
  archives: string[],
  opts: Pick<KubeClusterOptions, 'dataDir' | 'log'> = {},
): Promise<void> {
  await run(NODE_SH, ['import', ...archives], opts);
}

/**
 * The kubeconfig for tests, exported by jest's global setup. Deliberately no fallback to
 * $KUBECONFIG or ~/.kube/config: these tests create fake nodes and expect kwok behaviours, so
 * they must never run against a cluster nobody chose for them.
 */
export function testKubeConfig(): KubeConfig {
  const p = process.env[KUBECONFIG_ENV];
  if (!p) {
    throw new Error(
      `${KUBECONFIG_ENV} is not set: jest's global setup starts the local cluster (deploy/dev/kube/cluster.ts)`,
    );
  }
  return loadKubeConfig(p);
}
