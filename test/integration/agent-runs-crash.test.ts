import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { AgentRunStatus } from '../../contracts/agent-run';
import { startReferenceModelServer, type ReferenceModelServer } from '../../deploy/dev/model-server/server';
import { freePort, type ManagedProcess } from '../../deploy/dev/process';
import { serveModel, untilRouted } from '../support/gateway';
import { seedCatalogEntry } from '../support/mcp';
import {
  bearer,
  eventually,
  startTestPlatform,
  startWorkerProcess,
  type TestPlatform,
  type TestTenant,
} from '../support/platform';

let p: TestPlatform;
let acme: TestTenant;
let model: ReferenceModelServer;
let worker: ManagedProcess | undefined;
let root: string;
let gatewayUrl: string;

const startWorker = () => startWorkerProcess(p, { LLMHUB_GATEWAY_URL: gatewayUrl });

beforeAll(async () => {
  const port = await freePort();
  gatewayUrl = `http://127.0.0.1:${port}`;
  p = await startTestPlatform({ worker: false });
  await p.app.listen({ host: '127.0.0.1', port });
  acme = await p.createTenant('agent-crash');
  model = await startReferenceModelServer({ name: 'agent-crash' });
  await serveModel(p.db, acme.id, 'agent-model', { v1: model.url }, { stable: 'v1' });
  await untilRouted(p.app, acme.keys.developer, 'agent-model');
  root = await mkdtemp(path.join(os.tmpdir(), 'llmhub-agent-crash-'));
  // Catalog servers run as the sandbox's user, which must read and write the directory the filesystem server serves.
  await chmod(root, 0o777);
  await writeFile(path.join(root, 'notes.txt'), 'HERON');
  const fs = require.resolve('@modelcontextprotocol/server-filesystem/dist/index.js');
  expect(
    (
      await inject(acme.keys.admin, 'POST', '/v1/mcp-servers', {
        id: 'fs',
        catalog: await seedCatalogEntry(p.db, 'fs', [fs, root], { read_text_file: 'read-only' }),
      })
    ).statusCode,
  ).toBe(201);
  expect(
    (
      await inject(acme.keys.developer, 'PUT', '/v1/agents/writer', {
        model: 'agent-model',
        systemPrompt: '',
        tools: ['fs__read_text_file', 'fs__write_file'],
      })
    ).statusCode,
  ).toBe(200);
  worker = await startWorker();
});
afterAll(async () => {
  await worker?.stop();
  await p?.close();
  await model?.close();
  if (root) await rm(root, { recursive: true, force: true });
});

function inject(key: string, method: 'GET' | 'POST' | 'PUT', url: string, payload?: object) {
  return p.app.inject({ method, url, headers: bearer(key), ...(payload ? { payload } : {}) });
}
const statusOf = async (runId: string): Promise<AgentRunStatus & { workflowStatus: string }> =>
  (await inject(acme.keys.viewer, 'GET', `/v1/agent-runs/${runId}`)).json();

describe('agent run survives a worker crash', () => {
  it('still waits after the worker is SIGKILLed during the approval wait, completes on approval, and does not repeat the finished read', async () => {
    const target = path.join(root, 'out.txt');
    const input = [
      `/tool fs__read_text_file ${JSON.stringify({ path: path.join(root, 'notes.txt') })}`,
      `/tool fs__write_file ${JSON.stringify({ path: target, content: 'once' })}`,
    ].join('\n');
    const started = await inject(acme.keys.developer, 'POST', '/v1/agent-runs', { agentId: 'writer', input });
    expect(started.statusCode).toBe(202);
    const { runId, workflowId } = started.json();
    const waiting = await eventually('the write to wait for approval', async () => {
      const s = await statusOf(runId);
      return s.phase === 'awaiting_approval' ? s : undefined;
    });
    expect(waiting.toolCalls[0]).toMatchObject({ tool: 'fs__read_text_file', status: 'succeeded' });

    process.kill(worker!.pid, 'SIGKILL');
    await worker!.stop();
    worker = await startWorker();

    // The new worker rebuilds the run from history: still waiting, on the same action.
    const after = await eventually('the run to answer again', async () => {
      const res = await inject(acme.keys.viewer, 'GET', `/v1/agent-runs/${runId}`);
      return res.statusCode === 200 ? (res.json() as AgentRunStatus) : undefined;
    });
    expect(after.pending?.actionHash).toBe(waiting.pending!.actionHash);
    expect(
      (
        await inject(acme.keys.approver, 'POST', `/v1/agent-runs/${runId}/approvals`, {
          actionHash: waiting.pending!.actionHash,
          decision: 'approve',
        })
      ).statusCode,
    ).toBe(200);
    const done = await eventually('the run to finish', async () => {
      const s = await statusOf(runId);
      return s.workflowStatus === 'COMPLETED' ? s : undefined;
    });
    expect(done.phase).toBe('completed');
    expect(await readFile(target, 'utf8')).toBe('once');
    const calls = (
      await p.db.query<{ url: string }>(
        `SELECT url FROM audit_log WHERE workflow_id = $1 AND method = 'TOOL' ORDER BY id`,
        [workflowId],
      )
    ).rows.map((r) => r.url);
    expect(calls).toEqual(['mcp://fs/read_text_file', 'mcp://fs/write_file']);
  });
});
