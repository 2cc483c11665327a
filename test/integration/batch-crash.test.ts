import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { startReferenceModelServer, type ReferenceModelServer } from '../../deploy/dev/model-server/server';
import { freePort, type ManagedProcess } from '../../deploy/dev/process';
import { serveModel, untilRouted } from '../support/gateway';
import {
  bearer,
  eventually,
  startTestPlatform,
  startWorkerProcess,
  type TestPlatform,
  type TestTenant,
} from '../support/platform';
import { chatLines, fileLines, untilBatch, uploadFile } from '../support/batch';

const LINES = 10_000;

let p: TestPlatform;
let acme: TestTenant;
let model: ReferenceModelServer;
let worker: ManagedProcess | undefined;
let gatewayUrl: string;

const startWorker = () => startWorkerProcess(p, { LLMHUB_GATEWAY_URL: gatewayUrl });

beforeAll(async () => {
  const port = await freePort();
  gatewayUrl = `http://127.0.0.1:${port}`;
  p = await startTestPlatform({ worker: false });
  await p.app.listen({ host: '127.0.0.1', port });
  acme = await p.createTenant('batch-crash');
  model = await startReferenceModelServer({ name: 'batch-crash', countPrompts: true });
  await serveModel(p.db, acme.id, 'fast', { '1': model.url }, { stable: '1' });
  await untilRouted(p.app, acme.keys.developer, 'fast');
  worker = await startWorker();
});
afterAll(async () => {
  await worker?.stop();
  await p?.close();
  await model?.close();
});

describe('a batch survives its worker being SIGKILLed', () => {
  it(`answers each of ${LINES} lines exactly once in its output after two SIGKILLs mid-run`, async () => {
    const file = await uploadFile(p.app, acme.keys.developer, chatLines('fast', LINES));
    expect(file.statusCode).toBe(200);
    const created = await p.app.inject({
      method: 'POST',
      url: '/v1/batches',
      headers: bearer(acme.keys.developer),
      payload: { input_file_id: file.json().id, endpoint: '/v1/chat/completions', completion_window: '24h' },
    });
    expect(created.statusCode).toBe(200);
    const id = created.json().id as string;

    // Killed while lines are in flight: after the model server has seen 20% and then 60% of them.
    for (const share of [0.2, 0.6]) {
      await eventually(
        `${share * 100}% of the lines to reach the model`,
        async () => model.received() >= LINES * share,
        600_000,
      );
      process.kill(worker!.pid, 'SIGKILL');
      await worker!.stop();
      worker = await startWorker();
    }

    const done = await untilBatch(p.app, acme.keys.viewer, id, ['completed'], 900_000);
    expect(done.request_counts).toEqual({ total: LINES, completed: LINES, failed: 0 });
    const output = await fileLines(p.app, acme.keys.viewer, done.output_file_id);
    const ids = output.map((l) => l.custom_id);
    expect(new Set(ids).size).toBe(ids.length);
    expect(new Set(ids)).toEqual(new Set(Array.from({ length: LINES }, (_, i) => `req-${i}`)));
    expect(done.error_file_id).toBeNull();

    // Upstream calls per custom_id: at least one each; more only for lines in flight when a worker died, or answered
    // since its page's last save of results (once a second), which its retry sends again.
    const calls = Array.from({ length: LINES }, (_, i) => model.prompts.get(`line ${i}`) ?? 0);
    const histogram = new Map<number, number>();
    for (const c of calls) histogram.set(c, (histogram.get(c) ?? 0) + 1);
    console.log(
      `upstream calls per custom_id over ${LINES} lines, two SIGKILLs: ${[...histogram.entries()]
        .sort(([a], [b]) => a - b)
        .map(([c, n]) => `${c} call(s): ${n} lines`)
        .join(', ')}`,
    );
    expect(Math.min(...calls)).toBeGreaterThanOrEqual(1);
    // At most once per attempt of a line's page: the first, and one retry per SIGKILL.
    expect(Math.max(...calls)).toBeLessThanOrEqual(3);
  }, 1_500_000);
});
