import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import net from 'node:net';
import { networkInterfaces } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { CoreV1Api, PatchStrategy, setHeaderOptions, type KubeConfig } from '@kubernetes/client-node';
import type { PodPlacement } from '../../activities/kubernetes/manifests';
import { importNodeImages, KUBECONFIG_ENV, realNodeCluster, realNodeError } from '../../deploy/dev/kube/cluster';
import { imageArchive, imageTag } from './images';

const run = promisify(execFile);
const ROOT = path.resolve(__dirname, '..', '..');

/** The run's local cluster data dir, where jest's global set-up started the control plane and the real node. */
const kubeDataDir = (): string => {
  const data = process.env.LLMHUB_TEST_DATA;
  if (!data) throw new Error('LLMHUB_TEST_DATA is not set: jest global setup starts the local cluster');
  return path.join(data, 'kube');
};

/**
 * The real node of the run's cluster (deploy/dev/kube/REAL-NODE.md) with the reference model server's image imported.
 * Throws, failing the test, with the reason the node did not start: a test that needs containers is never skipped.
 */
export async function realNode(): Promise<{ modelServerImage: string; kubectl(...args: string[]): Promise<string> }> {
  const dataDir = kubeDataDir();
  const why = await realNodeError(dataDir);
  if (why) throw new Error(`the real node is not running: ${why}`);
  const modelServerImage = await inputTaggedImage('model-server');
  const { stdout: bin } = await run('bash', [path.join(ROOT, 'deploy/dev/kube/build.sh'), '--print-bin-dir']);
  return {
    modelServerImage,
    kubectl: async (...args) =>
      (
        await run(path.join(bin.trim(), 'kubectl'), ['--kubeconfig', path.join(dataDir, 'kubeconfig'), ...args], {
          maxBuffer: 64 * 1024 * 1024,
        })
      ).stdout,
  };
}

/**
 * Points this test file's platform at the real node (jest gives each test file its own process.env): cluster `real` is
 * the node, its model versions run the node's model-server image, and nothing maps versions to local processes.
 */
export function useRealNodeCluster(node: { modelServerImage: string }): void {
  process.env.LLMHUB_CLUSTERS = JSON.stringify({ local: {}, real: realNodeCluster(process.env[KUBECONFIG_ENV]!) });
  process.env.LLMHUB_MODEL_SERVER_IMAGE = node.modelServerImage;
  delete process.env.LLMHUB_LOCAL_ENDPOINTS;
}

/**
 * One of the project's images tagged by a hash of its inputs (deploy/dev/kube/image.sh: built only when they changed),
 * imported into the real node's containerd; answers the name a pod spec gives it.
 */
export async function inputTaggedImage(image: 'model-server' | 'platform'): Promise<string> {
  const { stdout } = await run('bash', [path.join(ROOT, 'deploy/dev/kube/image.sh'), image], {
    maxBuffer: 16 * 1024 * 1024,
  });
  const [archive, ref] = stdout.trim().split(/\s+/).slice(-2);
  await importNodeImages([archive!], { dataDir: kubeDataDir() });
  return ref!;
}

/** The real node as a test that runs the platform's pods there sees it. */
export interface RealNodeHost {
  name: string;
  /** What holds a pod to the node among the kwok nodes (the cluster entry's nodeSelector and tolerations). */
  placement: PodPlacement;
  /** This machine's address on its link to the node, which the node's pods reach (and nothing else of the host). */
  hostAddress: string;
}

const inCidr = (ip: string, cidr: string): boolean => {
  const [base, bits] = cidr.split('/') as [string, string];
  const block = new net.BlockList();
  block.addSubnet(base, Number(bits), 'ipv4');
  return block.check(ip, 'ipv4');
};

/** The real node's name, placement and the host's address for its pods; fails, never skips, without the node. */
export async function realNodeHost(kc: KubeConfig): Promise<RealNodeHost> {
  const why = await realNodeError(kubeDataDir());
  if (why) throw new Error(`the real node is not running: ${why}`);
  const { nodeSelector, tolerations } = realNodeCluster('');
  const labels = Object.entries(nodeSelector).map(([k, v]) => `${k}=${v}`);
  const [node] = (await kc.makeApiClient(CoreV1Api).listNode({ labelSelector: labels.join(',') })).items;
  const nodeIp = node?.status?.addresses?.find((a) => a.type === 'InternalIP')?.address;
  if (!nodeIp) throw new Error(`no node labelled ${labels.join(',')} with an InternalIP`);
  // The host's end of its link to the node (the node's pods are routed through it): where pods find the host.
  const hostAddress = Object.values(networkInterfaces())
    .flat()
    .find((a) => a?.family === 'IPv4' && a.address !== nodeIp && inCidr(nodeIp, a.cidr!))?.address;
  if (!hostAddress)
    throw new Error(`no address of this machine shares a subnet with node ${node!.metadata!.name} (${nodeIp})`);
  return { name: node!.metadata!.name!, placement: { nodeSelector, tolerations }, hostAddress };
}

/**
 * Makes a server that listens on the host's loopback reachable from the node's pods: a TCP forwarder on the host's
 * address on its link to the node. The stack's servers stay on 127.0.0.1 (pods cannot reach the host's loopback, and
 * listening on every address would offer them to more than the node); only what a test forwards is offered to pods.
 * Pods cannot use hostNetwork instead: tenant namespaces enforce the restricted Pod Security Standard.
 */
export async function forwardToPods(
  hostAddress: string,
  target: { host: string; port: number },
): Promise<{ url: (scheme: string) => string; port: number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((inbound) => {
    const outbound = net.connect(target.port, target.host);
    for (const s of [inbound, outbound]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {
        inbound.destroy();
        outbound.destroy();
      });
    }
    inbound.pipe(outbound).pipe(inbound);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, hostAddress, resolve);
  });
  const { port } = server.address() as net.AddressInfo;
  return {
    port,
    url: (scheme) => `${scheme}://${hostAddress}:${port}`,
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/**
 * Imports the project's images (deploy/images/build.sh archives of this tree's tag) into the node's containerd, in
 * the `k8s.io` namespace the kubelet's CRI reads, unless already there; answers the image references as the kubelet
 * asks for them (`docker.io/llmhub/<image>:<tag>`). The Jobs' default pull policy for a tag other than `latest` is
 * IfNotPresent, so the kubelet never contacts a registry for them.
 */
export async function importImages(images: string[]): Promise<Record<string, string>> {
  const tag = await imageTag();
  const socket = path.join(kubeDataDir(), 'run', 'containerd.sock');
  const refs: Record<string, string> = {};
  for (const image of images) {
    const ref = `docker.io/llmhub/${image}:${tag}`;
    refs[image] = ref;
    const ctr = ['--address', socket, '--namespace', 'k8s.io', 'images', 'ls', '--quiet', `name==${ref}`];
    if ((await run('ctr', ctr)).stdout.trim()) continue;
    const archive = imageArchive(image, tag, 'docker');
    if (!existsSync(archive))
      throw new Error(`no image archive ${archive}: build it with \`npm run images -- ${images.join(' ')}\``);
    await importNodeImages([archive], { dataDir: kubeDataDir() });
  }
  return refs;
}

/**
 * Gives the node `gpus` of the extended resource `nvidia.com/gpu` (the documented way to advertise a resource no
 * device plugin manages: a node status patch the kubelet keeps), so a trainer Job, which always asks for a GPU, fits
 * on a machine without one. Answers the undo.
 */
export async function advertiseGpus(kc: KubeConfig, node: string, gpus: number): Promise<() => Promise<void>> {
  const core = kc.makeApiClient(CoreV1Api);
  const before = (await core.readNodeStatus({ name: node })).status?.capacity?.['nvidia.com/gpu'];
  const set = (value: string | null) =>
    core.patchNodeStatus(
      { name: node, body: { status: { capacity: { 'nvidia.com/gpu': value } } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
  await set(String(gpus));
  return async () => {
    await set(before ?? null);
  };
}
