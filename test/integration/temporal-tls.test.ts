import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { Connection } from '@temporalio/client';
import { NativeConnection } from '@temporalio/worker';
import { loadConfig } from '../../common/config';
import { temporalConnectionOptions } from '../../common/temporal-connection';
import { freePort, startProcess, tail, type ManagedProcess } from '../../deploy/dev/process';
import { makeTestPki, startMtlsProxy, type MtlsProxy, type TestPki } from '../support/mtls-proxy';
import {
  bearer,
  eventually,
  startTestPlatform,
  startWorkerProcess,
  uniqueId,
  type TestPlatform,
  type TestTenant,
} from '../support/platform';

/**
 * The Temporal dev server speaks plaintext; in front of it a TLS proxy (node:tls, requestCert + rejectUnauthorized)
 * admits only clients whose certificate the test CA signed, as a secured cluster or Temporal Cloud's mTLS does.
 * The API and the worker are real processes that know only the proxy's address and the TEMPORAL_TLS_* files.
 */
const SERVER_NAME = 'temporal.llmhub.test';
const ROOT = path.resolve(__dirname, '..', '..');
const run = promisify(execFile);

let p: TestPlatform;
let tenant: TestTenant;
let pki: TestPki;
let proxy: MtlsProxy;
const processes: ManagedProcess[] = [];

/** The connection settings of a client holding `client`'s certificate (none: no certificate). */
const tlsEnv = (client?: string): Record<string, string> => ({
  TEMPORAL_ADDRESS: proxy.address,
  TEMPORAL_TLS_CA_FILE: pki.ca,
  TEMPORAL_TLS_SERVER_NAME: SERVER_NAME,
  ...(client
    ? { TEMPORAL_TLS_CERT_FILE: pki.clients[client]!.crt, TEMPORAL_TLS_KEY_FILE: pki.clients[client]!.key }
    : {}),
});
const optionsOf = (env: Record<string, string>) => temporalConnectionOptions(loadConfig({ ...process.env, ...env }));

beforeAll(async () => {
  p = await startTestPlatform({ worker: false });
  tenant = await p.createTenant('tls');
  pki = await makeTestPki(path.join(process.env.LLMHUB_TEST_DATA!, uniqueId('temporal-pki')), SERVER_NAME, [
    'llmhub-api',
    'llmhub-worker',
  ]);
  proxy = await startMtlsProxy(pki, loadConfig().TEMPORAL_ADDRESS);
});
afterAll(async () => {
  await Promise.all(processes.map((proc) => proc.stop()));
  await proxy?.close();
  await p?.close();
});

describe('Temporal over mutual TLS', () => {
  it('the API and a worker, connected only through the mTLS proxy, register a model version', async () => {
    const worker = await startWorkerProcess(p, tlsEnv('llmhub-worker'));
    processes.push(worker);
    const port = await freePort();
    const api = await startProcess({
      name: uniqueId('tls-api'),
      command: process.execPath,
      args: ['--import', 'tsx', path.join(ROOT, 'roles', 'api.ts')],
      dataDir: process.env.LLMHUB_TEST_DATA!,
      env: {
        ...tlsEnv('llmhub-api'),
        TEMPORAL_TASK_QUEUE: p.taskQueue,
        API_PORT: String(port),
        LOG_LEVEL: 'warn',
        NODE_OPTIONS: '',
      },
    });
    processes.push(api);
    const url = `http://127.0.0.1:${port}`;
    // /readyz asks Temporal too: it answers 200 only once the API's TLS connection works.
    await eventually('the API to be ready', () =>
      fetch(`${url}/readyz`).then(
        (r) => r.ok,
        () => false,
      ),
    ).catch(async (err) => {
      throw new Error(`${(err as Error).message}\n${await tail(api.logFile)}`);
    });

    const call = (method: string, route: string, body?: object, headers: Record<string, string> = {}) =>
      fetch(`${url}${route}`, {
        method,
        headers: { ...bearer(tenant.keys.developer), 'content-type': 'application/json', ...headers },
        body: body && JSON.stringify(body),
      });
    const model = uniqueId('tls-model');
    expect((await call('POST', '/v1/models', { id: model, name: model })).status).toBe(201);
    const content = 'weights-'.repeat(100);
    const key = `${uniqueId('artifact')}/model.safetensors`;
    await p.objects.put({ bucket: tenant.bucket, key }, content);
    const registered = await call(
      'POST',
      `/v1/models/${model}/versions`,
      { version: '1.0.0', artifactUri: `s3://${tenant.bucket}/${key}` },
      { 'idempotency-key': uniqueId('k') },
    );
    expect(registered.status).toBe(202);
    const { workflowId } = (await registered.json()) as { workflowId: string };

    const version = await eventually('the version to be registered', async () => {
      const v = (await (await call('GET', `/v1/models/${model}/versions/1.0.0`)).json()) as { state: string };
      return ['ready', 'failed'].includes(v.state) && v;
    }).catch(async (err) => {
      throw new Error(`${(err as Error).message}\n--- worker ---\n${await tail(worker.logFile)}`);
    });
    expect(version).toMatchObject({
      state: 'ready',
      sizeBytes: content.length,
      checksum: `sha256:${createHash('sha256').update(content).digest('hex')}`,
      workflowId,
    });
    // The activities ran in the worker process, which reaches Temporal only through the proxy.
    await p.temporal.workflow.getHandle(workflowId).result();
    expect((await p.temporal.workflow.getHandle(workflowId).describe()).status.name).toBe('COMPLETED');
    expect(new Set(proxy.admitted)).toEqual(new Set(['llmhub-api', 'llmhub-worker']));
  });

  it('is refused without a client certificate, and refuses a server its CA did not sign or of another name', async () => {
    // Control: the same client with its certificate gets through.
    const good = await NativeConnection.connect(optionsOf(tlsEnv('llmhub-api')));
    await good.close();

    const refusedBefore = proxy.refused.length;
    const admittedBefore = proxy.admitted.length;
    const noCert = optionsOf(tlsEnv());
    expect(noCert.tls).toEqual({ serverRootCACertificate: expect.anything(), serverNameOverride: SERVER_NAME });
    // Under TLS 1.3 the client learns of it only on its first read, so the message varies; the proxy says why.
    await expect(NativeConnection.connect(noCert)).rejects.toThrow(/GetSystemInfo/);
    await expect(clientConnects(noCert)).rejects.toThrow(/Failed to connect/);
    expect(proxy.refused.slice(refusedBefore)).toContainEqual(
      expect.stringContaining('peer did not return a certificate'),
    );

    const wrongCa = optionsOf({ ...tlsEnv('llmhub-api'), TEMPORAL_TLS_CA_FILE: pki.otherCa });
    await expect(NativeConnection.connect(wrongCa)).rejects.toThrow(/UnknownIssuer/);
    await expect(clientConnects(wrongCa)).rejects.toThrow(/Failed to connect/);

    const wrongName = optionsOf({ ...tlsEnv('llmhub-api'), TEMPORAL_TLS_SERVER_NAME: 'other.llmhub.test' });
    await expect(NativeConnection.connect(wrongName)).rejects.toThrow(/NotValidForName/);
    await expect(clientConnects(wrongName)).rejects.toThrow(/Failed to connect/);
    expect(proxy.admitted.length).toBe(admittedBefore);
  });

  it('a worker without its client certificate stops at start, saying where and how it connected', async () => {
    const failed = await run(process.execPath, ['--import', 'tsx', path.join(ROOT, 'roles', 'worker.ts')], {
      cwd: ROOT,
      env: {
        ...process.env,
        ...tlsEnv(),
        TEMPORAL_TASK_QUEUE: p.taskQueue,
        WORKER_METRICS_PORT: '0',
        NODE_OPTIONS: '',
      },
    }).then(
      () => undefined,
      (err: { code?: number; stderr?: string }) => err,
    );
    expect(failed?.code).toBe(1);
    expect(failed?.stderr).toContain(
      `cannot reach the Temporal server at ${proxy.address} over TLS (server name ${SERVER_NAME})`,
    );
  });
});

/** A client connection attempt that is closed whatever its outcome, so a refused one does not retry in the background. */
async function clientConnects(options: ReturnType<typeof optionsOf>): Promise<void> {
  const connection = Connection.lazy({ ...options, connectTimeout: '5s' });
  try {
    await connection.ensureConnected();
  } finally {
    await connection.close();
  }
}
