import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { chunkBlocks } from '../../activities/parsing/chunker';
import { parseBuiltin } from '../../activities/parsing/parsers';
import { pointId } from '../../common/vectors';
import type { ManagedProcess } from '../../deploy/dev/process';
import type { IngestionStats } from '../../contracts/ingestion';
import {
  bearer,
  eventually,
  startTestPlatform,
  startWorkerProcess,
  uniqueId,
  type TestPlatform,
  type TestTenant,
} from '../support/platform';

const DOCS = 1000;
const CHUNKING = { strategy: 'paragraph' as const, size: 400, overlap: 50 };
let p: TestPlatform;
let tenant: TestTenant;
let worker: ManagedProcess | undefined;
const bucket = uniqueId('crash');

const docText = (i: number) =>
  `Record ${i} of the archive.\n\nItem ${i} belongs to shelf ${i % 37} and was catalogued in year ${1900 + (i % 120)}.\n`;

beforeAll(async () => {
  p = await startTestPlatform({ worker: false });
  tenant = await p.createTenant('crash');
  await p.objects.ensureBucket(bucket);
  for (let i = 0; i < DOCS; i += 50) {
    await Promise.all(
      Array.from({ length: 50 }, (_, j) =>
        p.objects.put({ bucket, key: `docs/doc-${String(i + j).padStart(4, '0')}.txt` }, docText(i + j)),
      ),
    );
  }
  // The archive is a shared bucket the tenant is granted (read only), as an operator would.
  const granted = await p.app.inject({
    method: 'PUT',
    url: `/v1/platform/tenants/${tenant.id}/storage`,
    headers: bearer(p.operatorKey),
    payload: { grants: [bucket] },
  });
  expect(granted.statusCode).toBe(200);
  worker = await startWorkerProcess(p);
});
afterAll(async () => {
  await worker?.stop();
  await p?.close();
});

describe('ingestion survives worker crashes', () => {
  it('ends with exactly the expected points after the worker is SIGKILLed 3 times mid-run', async () => {
    const res = await p.app.inject({
      method: 'POST',
      url: '/v1/knowledge/archive/ingestions',
      headers: bearer(tenant.keys.developer),
      payload: { source: { type: 's3', bucket, prefix: 'docs/' }, chunking: CHUNKING, batchSize: 50, parallelism: 2 },
    });
    expect(res.statusCode).toBe(202);
    const handle = p.temporal.workflow.getHandle(res.json().workflowId);
    const indexed = async () =>
      Number(
        (
          await p.db.query('SELECT count(*) FROM knowledge_documents WHERE tenant_id = $1 AND namespace = $2', [
            tenant.id,
            'archive',
          ])
        ).rows[0].count,
      );

    for (let kill = 1; kill <= 3; kill++) {
      const before = await indexed();
      // Kill only while work is visibly going on, so every kill lands mid-ingestion.
      await eventually(
        `more documents indexed before kill ${kill}`,
        async () => (await indexed()) >= before + 60 || undefined,
      );
      expect(await indexed()).toBeLessThan(DOCS);
      process.kill(worker!.pid, 'SIGKILL');
      await worker!.stop();
      worker = await startWorkerProcess(p);
    }
    const stats = (await handle.result()) as IngestionStats;
    expect(stats.total).toBe(DOCS);
    expect(stats.failed).toBe(0);
    expect(stats.done + stats.skippedUnchanged).toBe(DOCS);

    const expected: string[] = [];
    for (let i = 0; i < DOCS; i++) {
      const documentId = `doc-${String(i).padStart(4, '0')}.txt`;
      const chunks = chunkBlocks(await parseBuiltin(documentId, Buffer.from(docText(i))), CHUNKING);
      const contentHash = createHash('sha256').update(docText(i)).digest('hex');
      chunks.forEach((_, chunkIndex) =>
        expected.push(pointId({ tenantId: tenant.id, namespace: 'archive', documentId, chunkIndex, contentHash })),
      );
    }
    const ns = (await p.app.inject({ method: 'GET', url: '/v1/knowledge', headers: bearer(tenant.keys.viewer) })).json()
      .namespaces[0];
    const actual = await p.vectors.pointIds(ns.collection, { tenantId: tenant.id, namespace: 'archive' });
    expect(new Set(actual).size).toBe(actual.length);
    expect(actual).toEqual(expected.sort());
    expect(ns.documents).toBe(DOCS);
  });
});
