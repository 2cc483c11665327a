import { chmod, link, copyFile, mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { ObjectStore } from '../../common/objectstore';
import { encodeMlp, forward, type Mlp } from '../trainers/reference/mlp';

/** A deterministic generator (an LCG), so every `npm run dev` seeds the same bytes. */
function lcg(seed: number): () => number {
  let s = seed;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

function mlp(sizes: number[], next: () => number): Mlp {
  return sizes.slice(1).map((outputs, i) => ({
    inputs: sizes[i]!,
    outputs,
    weight: Float32Array.from({ length: outputs * sizes[i]! }, () => next() - 0.5),
    bias: Float32Array.from({ length: outputs }, () => (next() - 0.5) * 0.1),
  }));
}

/** Three short documents for the knowledge examples (ingested from `s3://<bucket>/demo/docs/`). */
const DOCS: Record<string, string> = {
  'rollouts.md':
    '# Rollouts\n\nA deploy starts a canary, analyses its error rate and latency, then promotes it or rolls back.\n',
  'fine-tuning.md':
    '# Fine-tuning\n\nA fine-tune trains LoRA adapters on a JSONL dataset and registers the merged weights as a new version.\n',
  'agents.md':
    '# Agents\n\nAn agent run calls MCP tools; every tool that is not read-only waits for a person to approve it.\n',
};

/**
 * What the README's examples need in the demo tenant's bucket: a small base model in the reference format
 * (llmhub-mlp, 3→8→1) with a dataset it can be fine-tuned on (rows from a perturbed "teacher"), and documents to ingest.
 */
export async function seedDemoObjects(objects: ObjectStore, bucket: string): Promise<void> {
  const next = lcg(7);
  const base = mlp([3, 8, 1], next);
  const teacher = base.map((l) => ({ ...l, weight: l.weight.map((w) => w + 0.3 * (next() - 0.5)) }));
  const rows = Array.from({ length: 256 }, () => {
    const x = [next() * 2 - 1, next() * 2 - 1, next() * 2 - 1];
    return JSON.stringify({ x, y: Array.from(forward(teacher, x)) });
  });
  await Promise.all([
    objects.put({ bucket, key: 'demo/model.safetensors' }, 'demo weights\n'),
    objects.put({ bucket, key: 'demo/mlp/base.safetensors' }, encodeMlp(base)),
    objects.put({ bucket, key: 'demo/mlp/train.jsonl' }, `${rows.join('\n')}\n`),
    ...Object.entries(DOCS).map(([name, text]) => objects.put({ bucket, key: `demo/docs/${name}` }, text)),
  ]);
}

/** The folder the demo's MCP server serves: a fixed path, so the README's agent example names it as printed. */
export const DEMO_FILES_DIR = '/tmp/llmhub-demo-files';

/**
 * An operator's catalog entry `files` (the npm filesystem MCP server over DEMO_FILES_DIR, its read tools classified
 * read-only) enabled for the demo tenant, through the API as an operator and the tenant's admin would. The sandbox runs
 * it as `nobody` when the worker is root, so it gets a Node binary and a folder that user can reach.
 */
export async function seedDemoMcpServer(api: string, dataDir: string, keys: { admin: string; operator: string }) {
  const dir = path.join(dataDir, 'mcp');
  const files = DEMO_FILES_DIR;
  await mkdir(dir, { recursive: true });
  await mkdir(files, { recursive: true });
  await chmod(dir, 0o755);
  await chmod(files, 0o777);
  await writeFile(path.join(files, 'README.txt'), 'Files the demo agent may read and, once approved, write.\n');
  const node = path.join(dir, 'node');
  await link(process.execPath, node).catch(async (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EEXIST') await copyFile(process.execPath, node);
  });
  await chmod(node, 0o755);
  const post = async (route: string, key: string, body: unknown) => {
    const res = await fetch(`${api}${route}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    // 409: seeded by an earlier start (the data dir keeps it).
    if (!res.ok && res.status !== 409) throw new Error(`seeding ${route}: ${res.status} ${await res.text()}`);
  };
  await post('/v1/platform/mcp-catalog', keys.operator, {
    id: 'files',
    description: `the npm filesystem MCP server over ${DEMO_FILES_DIR}`,
    command: node,
    args: [require.resolve('@modelcontextprotocol/server-filesystem/dist/index.js'), files],
    risks: { read_text_file: 'read-only', list_directory: 'read-only' },
  });
  await post('/v1/mcp-servers', keys.admin, { id: 'files', catalog: 'files' });
}
