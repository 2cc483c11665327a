import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { createPlatformActivities } from '../../activities';
import { agentRunContract, type AgentDefinition, type ToolApprovalRequest } from '../../contracts/agent-run';
import { loadConfig } from '../../common/config';
import { createLogger } from '../../common/logger';
import { customSearchAttributes } from '../../contracts/search-attributes';
import { startReferenceModelServer, type ReferenceModelServer } from '../../deploy/dev/model-server/server';
import { freePort } from '../../deploy/dev/process';
import { temporalExecutable } from '../../temporal/server';
import { startWorker, type RunningWorker } from '../../workers/bootstrap';
import { platformActivityDeps } from '../../workers/platform-deps';
import { serveModel, untilRouted } from '../support/gateway';
import { seedCatalogEntry } from '../support/mcp';
import {
  bearer,
  eventually,
  startTestPlatform,
  uniqueId,
  type TestPlatform,
  type TestTenant,
} from '../support/platform';

/**
 * Continue-as-new only happens when the server suggests it (history size or length). This file runs its own dev
 * server that suggests it after 40 events, so a short run crosses several runs of the same workflow id.
 */
let p: TestPlatform;
let env: TestWorkflowEnvironment;
let worker: RunningWorker;
let acme: TestTenant;
let model: ReferenceModelServer;
let root: string;
const taskQueue = uniqueId('agent-can');

beforeAll(async () => {
  const port = await freePort();
  p = await startTestPlatform({ worker: false });
  await p.app.listen({ host: '127.0.0.1', port });
  acme = await p.createTenant('agent-can');
  model = await startReferenceModelServer({ name: 'agent-can' });
  await serveModel(p.db, acme.id, 'agent-model', { v1: model.url }, { stable: 'v1' });
  await untilRouted(p.app, acme.keys.developer, 'agent-model');
  root = await mkdtemp(path.join(os.tmpdir(), 'llmhub-agent-can-'));
  // Catalog servers run as the sandbox's user, which must read and write the directory the filesystem server serves.
  await chmod(root, 0o777);
  await writeFile(path.join(root, 'notes.txt'), 'HERON');
  const fs = require.resolve('@modelcontextprotocol/server-filesystem/dist/index.js');
  expect(
    (
      await p.app.inject({
        method: 'POST',
        url: '/v1/mcp-servers',
        headers: bearer(acme.keys.admin),
        payload: {
          id: 'fs',
          catalog: await seedCatalogEntry(p.db, 'fs', [fs, root], { read_text_file: 'read-only' }),
        },
      })
    ).statusCode,
  ).toBe(201);
  env = await TestWorkflowEnvironment.createLocal({
    server: {
      executable: { type: 'existing-path', path: await temporalExecutable() },
      extraArgs: ['--dynamic-config-value', 'limit.historyCount.suggestContinueAsNew=40'],
      searchAttributes: customSearchAttributes,
    },
  });
  worker = await startWorker({
    connection: env.nativeConnection,
    namespace: env.namespace ?? 'default',
    taskQueue,
    activities: createPlatformActivities(
      await platformActivityDeps(loadConfig(), p.db, { gatewayUrl: `http://127.0.0.1:${port}`, vectors: p.vectors }),
    ),
    workflows: { workflowBundle: { codePath: process.env.LLMHUB_WORKFLOW_BUNDLE! } },
    logger: createLogger('test', 'warn'),
    handleSignals: false,
    shutdownGraceMs: 2_000,
  });
});
afterAll(async () => {
  await worker?.shutdown();
  await env?.teardown();
  await p?.close();
  await model?.close();
  if (root) await rm(root, { recursive: true, force: true });
});

describe('agent run continues as new', () => {
  it('carries the transcript and a later approval across runs of the same workflow id', async () => {
    const agent: AgentDefinition = {
      id: 'long',
      model: 'agent-model',
      systemPrompt: '',
      tools: ['fs__read_text_file', 'fs__write_file'],
      stepLimit: 20,
      approvalTimeoutSeconds: 3600,
    };
    const read = `/tool fs__read_text_file ${JSON.stringify({ path: path.join(root, 'notes.txt') })}`;
    const target = path.join(root, 'out.txt');
    const input = [
      ...Array<string>(6).fill(read),
      `/tool fs__write_file ${JSON.stringify({ path: target, content: 'after continue-as-new' })}`,
    ].join('\n');
    const workflowId = `agent-run/${acme.id}/long`;
    const first = await env.client.workflow.start('agentRun', {
      taskQueue,
      workflowId,
      args: [{ tenantId: acme.id, runId: 'long', agent, input }],
    });
    const handle = env.client.workflow.getHandle(workflowId);
    const waiting = await eventually('the write to wait for approval', async () => {
      const s = await handle.query(agentRunContract.statusQuery).catch(() => undefined);
      return s?.pending ? s : undefined;
    });
    expect(waiting.toolCalls.slice(0, 6).map((c) => c.status)).toEqual(Array(6).fill('succeeded'));
    const approval: ToolApprovalRequest = {
      by: 'key:approver',
      tenantId: acme.id,
      roles: ['approver'],
      actionHash: waiting.pending!.actionHash,
      decision: 'approve',
    };
    await handle.executeUpdate(agentRunContract.approvalUpdate, { args: [approval] });
    const done = await handle.result();
    expect(done.phase).toBe('completed');
    expect(done.step).toBe(8);
    expect(done.toolCalls).toHaveLength(7);
    expect(done.messages).toHaveLength(2 + 7 * 2 + 1);
    expect(await readFile(target, 'utf8')).toBe('after continue-as-new');
    expect((await env.client.workflow.getHandle(workflowId, first.firstExecutionRunId).describe()).status.name).toBe(
      'CONTINUED_AS_NEW',
    );
    expect((await handle.describe()).runId).not.toBe(first.firstExecutionRunId);
  });
});
