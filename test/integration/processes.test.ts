import { execFile, spawn } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { AuditStore } from '../../common/store/audit';
import { freePort } from '../../deploy/dev/process';
import { bearer, eventually, startTestPlatform, uniqueId, type TestPlatform } from '../support/platform';

const run = promisify(execFile);
const ROOT = path.resolve(__dirname, '..', '..');
const tsx = (entry: string, env: NodeJS.ProcessEnv, args: string[] = []) =>
  [
    process.execPath,
    ['--import', 'tsx', path.join(ROOT, entry), ...args],
    { cwd: ROOT, env: { ...process.env, NODE_OPTIONS: '', ...env } },
  ] as const;

/** Runs a process to its end (it must end by itself) and returns its exit code and all its output ('close'). */
function finish(
  command: string,
  args: readonly string[],
  opts: { cwd: string; env: NodeJS.ProcessEnv },
): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { ...opts, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d) => (output += d));
    child.stderr.on('data', (d) => (output += d));
    child.on('close', (code) => resolve({ code, output }));
  });
}

let p: TestPlatform;
beforeAll(async () => {
  p = await startTestPlatform({ worker: false });
});
afterAll(async () => {
  await p?.close();
});

describe('operator entry points', () => {
  it('the create-tenant CLI makes a tenant whose printed admin key works against the API', async () => {
    const tenant = uniqueId('cli');
    const { stdout } = await run(...tsx('api/cli/create-tenant.ts', {}, ['--tenant', tenant, '--name', 'CLI tenant']));
    const created = JSON.parse(stdout);
    expect(created).toMatchObject({ tenant, role: 'admin', apiKey: expect.stringMatching(/^llmhub_/) });
    const res = await p.app.inject({ method: 'GET', url: '/v1/models', headers: bearer(created.apiKey) });
    expect(res.statusCode).toBe(200);
    const bad = await finish(...tsx('api/cli/create-tenant.ts', {}, ['--tenant', 'Not Valid']));
    expect(bad.code).toBe(1);
    expect(bad.output).toContain('--tenant');
  });

  it('a worker with a bad setting or no reachable Temporal stops with a message naming it', async () => {
    const badUrl = await finish(...tsx('roles/worker.ts', { DATABASE_URL: 'mysql://nope' }));
    expect(badUrl.code).toBe(1);
    expect(badUrl.output).toContain('DATABASE_URL');
    const port = await freePort();
    const noTemporal = await finish(
      ...tsx('roles/worker.ts', { TEMPORAL_ADDRESS: `127.0.0.1:${port}`, WORKER_METRICS_PORT: '0' }),
    );
    expect(noTemporal.code).toBe(1);
    expect(noTemporal.output).toContain(`cannot reach the Temporal server at 127.0.0.1:${port}`);
  });

  it('a worker serves activity metrics and exits cleanly on SIGTERM', async () => {
    const metricsPort = await freePort();
    const worker = spawn(
      ...tsx('roles/worker.ts', {
        TEMPORAL_TASK_QUEUE: p.taskQueue,
        WORKER_METRICS_PORT: String(metricsPort),
        LOG_LEVEL: 'warn',
      }),
    );
    const exited = new Promise<number | null>((resolve) => worker.on('exit', resolve));
    try {
      const tenant = await p.createTenant('metrics');
      await p.app.inject({
        method: 'POST',
        url: '/v1/models',
        headers: bearer(tenant.keys.developer),
        payload: { id: 'm', name: 'm' },
      });
      const res = await p.app.inject({
        method: 'POST',
        url: '/v1/models/m/versions',
        headers: bearer(tenant.keys.developer),
        payload: { version: '1', artifactUri: `s3://${tenant.bucket}/does-not-exist` },
      });
      await p.temporal.workflow
        .getHandle(res.json().workflowId)
        .result()
        .catch(() => undefined);
      const metrics = await eventually('worker metrics with the activity', async () => {
        const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
        return text.includes('activity_type="inspectArtifact",outcome="failed"') ? text : undefined;
      });
      expect(metrics).toMatch(
        /llmhub_activity_attempts_total\{task_queue="[^"]+",activity_type="markVersionFailed",outcome="completed"\} 1/,
      );
    } finally {
      worker.kill('SIGTERM');
    }
    expect(await exited).toBe(0);
  });

  it('the API writes its buffered audit rows when it is stopped with SIGTERM', async () => {
    const port = await freePort();
    // Rows are written once an hour here: only the shutdown can have written this one.
    const api = spawn(
      ...tsx('roles/api.ts', { API_PORT: String(port), GATEWAY_AUDIT_FLUSH_MS: '3600000', LOG_LEVEL: 'warn' }),
    );
    const exited = new Promise<number | null>((resolve) => api.on('exit', resolve));
    const traceId = uniqueId('sigterm');
    try {
      const tenant = await p.createTenant('sigterm');
      await eventually('the API to be ready', async () =>
        fetch(`http://127.0.0.1:${port}/readyz`).then(
          (r) => r.ok,
          () => false,
        ),
      );
      // An inference call's row is buffered, even for a model the gateway does not know.
      const res = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
        method: 'POST',
        headers: { ...bearer(tenant.keys.developer), 'content-type': 'application/json', 'x-trace-id': traceId },
        body: JSON.stringify({ model: 'nope', messages: [{ role: 'user', content: 'hi' }] }),
      });
      expect(res.status).toBe(404);
      expect(await new AuditStore(p.db).byRequestId(traceId)).toBeUndefined();
    } finally {
      api.kill('SIGTERM');
    }
    expect(await exited).toBe(0);
    expect(await new AuditStore(p.db).byRequestId(traceId)).toMatchObject({
      statusCode: 404,
      route: '/v1/chat/completions',
    });
  });
});
