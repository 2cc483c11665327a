import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import { networkInterfaces } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { CoreV1Api, PatchStrategy, setHeaderOptions, type KubeConfig, type V1Node } from '@kubernetes/client-node';
import type { PodPlacement } from '../../common/config';
import { imageArchive, imageTag } from './images';
import { eventually } from './platform';

const run = promisify(execFile);
const ROOT = path.resolve(__dirname, '..', '..');

/**
 * The local cluster's real node (kubelet + containerd, deploy/dev/kube) as a test file uses it: its name, the
 * placement that holds a Job to it among the kwok nodes (its hostname, and a toleration of each taint it carries),
 * and the host's address on its link to the node, where the only servers pods may reach are the ones a test forwards.
 */
export interface RealNode {
  name: string;
  placement: PodPlacement;
  /** This machine's address on its link to the node, which the node's pods reach (and nothing else of the host). */
  hostAddress: string;
}

/** The node whose kubelet reports a containerd runtime: kwok nodes run no container runtime. */
const isReal = (n: V1Node) => n.status?.nodeInfo?.containerRuntimeVersion?.startsWith('containerd://') === true;
const isReady = (n: V1Node) => n.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') === true;

const inCidr = (ip: string, cidr: string): boolean => {
  const [base, bits] = cidr.split('/') as [string, string];
  const block = new net.BlockList();
  block.addSubnet(base, Number(bits), 'ipv4');
  return block.check(ip, 'ipv4');
};

/**
 * Finds the real node, Ready. No silent skip: a cluster without one fails the test with what was looked for.
 */
export async function realNode(kc: KubeConfig): Promise<RealNode> {
  const failed = await readFile(path.join(kubeData(), 'run', 'node.error'), 'utf8').catch(() => '');
  if (failed) throw new Error(`the real node did not start: ${failed.trim()}`);
  const core = kc.makeApiClient(CoreV1Api);
  const node = await eventually(
    'a Ready node with a containerd runtime (the real node of deploy/dev/kube)',
    async () => (await core.listNode()).items.find((n) => isReal(n) && isReady(n)),
    60_000,
  );
  const nodeIp = node.status?.addresses?.find((a) => a.type === 'InternalIP')?.address;
  if (!nodeIp) throw new Error(`node ${node.metadata!.name} reports no InternalIP`);
  // The host's end of its link to the node (the node's pods are routed through it): where pods find the host.
  const hostAddress = Object.values(networkInterfaces())
    .flat()
    .find((a) => a?.family === 'IPv4' && a.address !== nodeIp && inCidr(nodeIp, a.cidr!))?.address;
  if (!hostAddress)
    throw new Error(`no address of this machine shares a subnet with node ${node.metadata!.name} (${nodeIp})`);
  const hostname = node.metadata!.labels?.['kubernetes.io/hostname'] ?? node.metadata!.name!;
  return {
    name: node.metadata!.name!,
    hostAddress,
    placement: {
      nodeSelector: { 'kubernetes.io/hostname': hostname },
      tolerations: (node.spec?.taints ?? [])
        .filter((t) => t.effect === 'NoSchedule' || t.effect === 'NoExecute' || t.effect === 'PreferNoSchedule')
        .map((t) => ({
          key: t.key,
          ...(t.value ? { operator: 'Equal' as const, value: t.value } : { operator: 'Exists' as const }),
          effect: t.effect as 'NoSchedule' | 'NoExecute' | 'PreferNoSchedule',
        })),
    },
  };
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

/** The test run's cluster data (deploy/dev/kube/node.sh keeps the node's sockets and start error under run/). */
const kubeData = () => path.join(process.env.LLMHUB_TEST_DATA!, 'kube');

/**
 * Imports the project's images (deploy/images/build.sh archives of this tree's tag) into the node's containerd, in
 * the `k8s.io` namespace the kubelet's CRI reads, unless already there; answers the image references as the kubelet
 * asks for them (`docker.io/llmhub/<image>:<tag>`). The Jobs' default pull policy for a tag other than `latest` is
 * IfNotPresent, so the kubelet never contacts a registry for them.
 */
export async function importImages(images: string[]): Promise<Record<string, string>> {
  const tag = await imageTag();
  const socket = path.join(kubeData(), 'run', 'containerd.sock');
  const refs: Record<string, string> = {};
  for (const image of images) {
    const ref = `docker.io/llmhub/${image}:${tag}`;
    refs[image] = ref;
    const listed = await run('ctr', [
      '--address',
      socket,
      '--namespace',
      'k8s.io',
      'images',
      'ls',
      '--quiet',
      `name==${ref}`,
    ]);
    if (listed.stdout.trim()) continue;
    const archive = imageArchive(image, tag, 'docker');
    if (!existsSync(archive))
      throw new Error(`no image archive ${archive}: build it with \`npm run images -- ${images.join(' ')}\``);
    await run('bash', [path.join(ROOT, 'deploy', 'dev', 'kube', 'node.sh'), 'import', archive], {
      env: { ...process.env, LLMHUB_KUBE_DATA_DIR: kubeData() },
    });
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
