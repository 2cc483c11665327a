import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { ingestionContract, type IngestionProgress } from '../../contracts/ingestion';
import type { IngestionInput, IngestionStats } from '../../contracts/ingestion';
import { OpenAiEmbedder } from '../../common/embeddings/openai';
import { uploadsPrefix } from '../../common/documents';
import { isNotFound } from '../../common/objectstore';
import { docxFile, htmlFile, pdfFile, textFile } from '../support/corpus';
import {
  countTokens,
  startReferenceModelServer,
  type ReferenceModelServer,
} from '../../deploy/dev/model-server/server';
import { serveModel, untilRouted } from '../support/gateway';
import { bearer, startTestPlatform, uniqueId, type TestPlatform, type TestTenant } from '../support/platform';
import { storeWith } from '../support/storage';

let p: TestPlatform;
let acme: TestTenant;
let rival: TestTenant;
const bucket = uniqueId('corpus');
const prefix = 'docs/';
const NS = 'handbook';

/** Six topics; each query below shares no content word with its document, so only meaning can match them. */
const questions: [string, string][] = [
  ['molten rock bursting out of a mountain', 'volcanoes.pdf'],
  ['how can I make leavened loaves at home', 'baking.docx'],
  ['did the company earn more money lately', 'finance.html'],
  ['forgot my wifi box login, how do I wipe it', 'router.md'],
  ['caring for a young canine', 'dogs.txt'],
  ['crew circling our planet in a spacecraft', 'space.md'],
];

async function corpus(): Promise<Record<string, Buffer>> {
  return {
    'volcanoes.pdf': await pdfFile([
      [
        'Volcanoes',
        'Magma rises through the crust and erupts as lava from a volcano.',
        'Ash clouds can disrupt aviation for days.',
      ],
      ['Monitoring', 'Seismometers record tremors that often precede an eruption.'],
    ]),
    'baking.docx': await docxFile([
      {
        heading: 'Sourdough',
        paragraphs: [
          'Bread dough is left to ferment overnight with a starter culture of wild yeast before baking in a hot oven.',
        ],
      },
    ]),
    'finance.html': htmlFile('Results', 'Quarterly results', [
      'Revenue increased twelve percent compared with the previous period, driven by strong subscription sales.',
    ]),
    'router.md': textFile(
      '# Resetting the router\n\nHold the reset button for ten seconds to restore factory settings and clear the admin password.\n',
    ),
    'dogs.txt': textFile('Puppies need vaccinations, regular walks and plenty of chew toys while their teeth grow.\n'),
    'space.md': textFile(
      '# Station life\n\nAstronauts aboard the station orbit the Earth sixteen times a day and exercise two hours daily.\n',
    ),
    'broken.pdf': Buffer.from('%PDF-1.7\nthis is not really a pdf at all\n%%EOF'),
  };
}

async function ingest(
  tenant: TestTenant,
  body: object,
  namespace = NS,
): Promise<IngestionProgress & { workflowId: string; status: string }> {
  const res = await p.app.inject({
    method: 'POST',
    url: `/v1/knowledge/${namespace}/ingestions`,
    headers: { ...bearer(tenant.keys.developer), 'idempotency-key': uniqueId('ing') },
    payload: body,
  });
  expect(res.statusCode).toBe(202);
  await p.temporal.workflow.getHandle(res.json().workflowId).result();
  const progress = await p.app.inject({
    method: 'GET',
    url: res.json().statusUrl,
    headers: bearer(tenant.keys.viewer),
  });
  expect(progress.statusCode).toBe(200);
  return progress.json();
}

const search = (tenant: TestTenant, query: string, namespace = NS) =>
  p.app.inject({
    method: 'POST',
    url: `/v1/knowledge/${namespace}/search`,
    headers: bearer(tenant.keys.viewer),
    payload: { query, topK: 3 },
  });

async function pointIds(tenant: TestTenant, namespace = NS): Promise<string[]> {
  const ns = await p.app.inject({ method: 'GET', url: '/v1/knowledge', headers: bearer(tenant.keys.viewer) });
  const collection = ns.json().namespaces.find((n: { name: string }) => n.name === namespace).collection;
  return p.vectors.pointIds(collection, { tenantId: tenant.id, namespace });
}

beforeAll(async () => {
  p = await startTestPlatform();
  acme = await p.createTenant('acme');
  rival = await p.createTenant('rival');
  await p.objects.ensureBucket(bucket);
  for (const [name, bytes] of Object.entries(await corpus()))
    await p.objects.put({ bucket, key: `${prefix}${name}` }, bytes);
  // The corpus is a shared bucket an operator lets acme read (a storage grant), not acme's own.
  const granted = await p.app.inject({
    method: 'PUT',
    url: `/v1/platform/tenants/${acme.id}/storage`,
    headers: bearer(p.operatorKey),
    payload: { grants: [bucket] },
  });
  expect(granted.json().storage).toEqual({ bucket: acme.bucket, grants: [bucket] });
});
afterAll(async () => {
  await p?.close();
});

describe('document ingestion and search', () => {
  const source = { type: 's3', bucket, prefix };
  let firstPoints: string[];

  it('ingests PDF, DOCX, HTML, Markdown and text; a corrupt PDF fails alone with its reason', async () => {
    const progress = await ingest(acme, { source, chunking: { strategy: 'heading', size: 400, overlap: 50 } });
    expect(progress).toMatchObject({
      status: 'COMPLETED',
      phase: 'completed',
      total: 7,
      done: 6,
      skippedUnchanged: 0,
      failed: 1,
    });
    expect(progress.failures).toEqual([
      { documentId: 'broken.pdf', reason: expect.stringContaining('could not parse PDF broken.pdf') },
    ]);
    expect(progress.chunksWritten).toBeGreaterThanOrEqual(6);
    firstPoints = await pointIds(acme);
    expect(firstPoints).toHaveLength(progress.chunksWritten);
  });

  it.each(questions)('finds the right document for a paraphrase: %s', async (query, expected) => {
    const res = await search(acme, query);
    expect(res.statusCode).toBe(200);
    expect(res.json().hits[0].documentId).toBe(expected);
  });

  it('returns citations that point at the source: page for PDFs, heading for structured documents', async () => {
    const pdf = (await search(acme, 'instruments detecting ground shaking before a blast')).json().hits[0];
    expect(pdf).toMatchObject({
      documentId: 'volcanoes.pdf',
      source: { uri: `s3://${bucket}/${prefix}volcanoes.pdf`, page: 2 },
    });
    const docx = (await search(acme, 'how can I make leavened loaves at home')).json().hits[0];
    expect(docx.source.heading).toBe('Sourdough');
    expect(docx.text).toContain('ferment overnight');
    expect(docx.source.end).toBeGreaterThan(docx.source.start);
  });

  it('embeds nothing on a second identical run and leaves the same points', async () => {
    const progress = await ingest(acme, { source, chunking: { strategy: 'heading', size: 400, overlap: 50 } });
    expect(progress).toMatchObject({ done: 0, skippedUnchanged: 6, failed: 1, chunksWritten: 0, removed: 0 });
    expect(await pointIds(acme)).toEqual(firstPoints);
  });

  it('re-embeds only a changed document and drops the points of a deleted one', async () => {
    const before = await pointIds(acme);
    await p.objects.put(
      { bucket, key: `${prefix}dogs.txt` },
      'Kittens sleep most of the day and chase string when awake.\n',
    );
    await p.objects.delete({ bucket, key: `${prefix}space.md` });
    const progress = await ingest(acme, { source, chunking: { strategy: 'heading', size: 400, overlap: 50 } });
    expect(progress).toMatchObject({ total: 6, done: 1, skippedUnchanged: 4, failed: 1, removed: 1 });
    const after = await pointIds(acme);
    const hits = (await search(acme, 'crew circling our planet in a spacecraft')).json().hits;
    expect(hits.map((h: { documentId: string }) => h.documentId)).not.toContain('space.md');
    const dogs = (await search(acme, 'young cats napping')).json().hits[0];
    expect(dogs).toMatchObject({ documentId: 'dogs.txt', text: expect.stringContaining('Kittens') });
    // The changed document's old point is gone, the new one is there, the rest are untouched.
    expect(after.length).toBe(before.length - 1);
    expect(after.filter((id) => !before.includes(id))).toHaveLength(1);
  });

  it('ingests uploaded files', async () => {
    const up = await p.app.inject({
      method: 'POST',
      url: '/v1/knowledge/uploads-ns/files?name=notes.md',
      headers: { ...bearer(acme.keys.developer), 'content-type': 'application/octet-stream' },
      payload: Buffer.from('# Gardening\n\nTomatoes want full sun and deep watering twice a week.\n'),
    });
    expect(up.statusCode).toBe(201);
    const progress = await ingest(acme, { source: { type: 'uploads' } }, 'uploads-ns');
    expect(progress).toMatchObject({ total: 1, done: 1 });
    expect((await search(acme, 'growing red fruit in the backyard', 'uploads-ns')).json().hits[0].documentId).toBe(
      'notes.md',
    );
  });

  it('stores an uploaded document as sent whatever its content type, refuses an empty or oversized one', async () => {
    const upload = (name: string, contentType: string | undefined, payload: Buffer, headers: object = {}) =>
      p.app.inject({
        method: 'POST',
        url: `/v1/knowledge/uploads-ns/files?name=${name}`,
        headers: {
          ...bearer(acme.keys.developer),
          ...(contentType ? { 'content-type': contentType } : {}),
          ...headers,
        },
        payload,
      });
    const prefix = uploadsPrefix(acme.id, 'uploads-ns');
    // text/plain and JSON went to the app's own parsers before, and the upload answered 400.
    for (const [name, type, text] of [
      ['plain.txt', 'text/plain', 'Plain text, é and all.\n'],
      ['data.md', 'application/json', '{"not": "parsed"} but stored\n'],
      ['page.html', 'text/html; charset=utf-8', '<p>hi</p>'],
      ['bare.md', undefined, '# no content type'],
    ] as const) {
      const res = await upload(name, type, Buffer.from(text));
      expect({ name, status: res.statusCode }).toEqual({ name, status: 201 });
      expect(res.json().sizeBytes).toBe(Buffer.byteLength(text));
      expect((await p.objects.get({ bucket: acme.bucket, key: `${prefix}${name}` })).toString('utf8')).toBe(text);
    }
    const empty = await upload('empty.md', 'text/markdown', Buffer.alloc(0));
    expect(empty.statusCode).toBe(400);
    expect(empty.json().error.details).toEqual({ field: 'body' });
    const oversized = await upload('big.md', 'text/markdown', Buffer.from('x'), {
      'content-length': String(51 * 1024 * 1024),
    });
    expect(oversized.statusCode).toBe(413);
    expect(oversized.json().error.details).toEqual({ field: 'body' });
    const keys = (await p.objects.list(acme.bucket, prefix)).map((o) => o.key);
    expect(keys).not.toContain(`${prefix}empty.md`);
    expect(keys).not.toContain(`${prefix}big.md`);
  });

  it('reads document objects whole with its own signed GET: any key, the bytes checked, S3 errors by name', async () => {
    const key = `raw/ü ß+(1)!*'~\n%2F.md`;
    const body = Buffer.from('Lava flows downhill. '.repeat(5000));
    await p.objects.put({ bucket, key }, body);
    expect((await p.objects.get({ bucket, key })).equals(body)).toBe(true);
    const failure = (call: Promise<unknown>) =>
      call.then(
        () => 'ok',
        (err: Error) => `${err.name} ${isNotFound(err)}`,
      );
    expect(await failure(p.objects.get({ bucket, key: 'raw/missing.md' }))).toBe('NoSuchKey true');
    expect(await failure(storeWith(p.storageAdmin!.credentialsOf(rival.id)).get({ bucket, key }))).toBe(
      'AccessDenied false',
    );
  });

  it('rejects bad ingestion input with the field named', async () => {
    const post = (payload: object) =>
      p.app.inject({
        method: 'POST',
        url: `/v1/knowledge/${NS}/ingestions`,
        headers: bearer(acme.keys.developer),
        payload,
      });
    // An overlap past the size is the largest there can be (size - 1), so every chunk still advances.
    const overlap = await post({ source, chunking: { size: 200, overlap: 300 } });
    expect(overlap.statusCode).toBe(202);
    const history = await p.temporal.workflow.getHandle(overlap.json().workflowId as string).fetchHistory();
    const payload = history.events![0]!.workflowExecutionStartedEventAttributes!.input!.payloads![0]!.data!;
    expect(JSON.parse(Buffer.from(payload).toString('utf8')).chunking).toMatchObject({ size: 200, overlap: 199 });
    const embedder = await post({ source, embedder: 'nope' });
    expect(embedder.json().error.details.field).toBe('body.embedder');
    const platformBucket = await post({ source: { type: 's3', bucket: 'llmhub', prefix: `tenants/${rival.id}/` } });
    // Outside the tenant's storage scope: forbidden (403), the same whether the bucket exists.
    expect(platformBucket.statusCode).toBe(403);
    expect(platformBucket.json().error.details.field).toBe('body.source.bucket');
    // Another tenant's bucket, and a bucket granted to acme but not to rival: refused alike, before any listing.
    for (const other of [acme.bucket, bucket]) {
      const res = await p.app.inject({
        method: 'POST',
        url: `/v1/knowledge/${NS}/ingestions`,
        headers: bearer(rival.keys.developer),
        payload: { source: { type: 's3', bucket: other, prefix: '' } },
      });
      expect(res.statusCode).toBe(403);
      expect(res.json().error.details.field).toBe('body.source.bucket');
    }
    const noSource = await post({});
    expect(noSource.json().error.details.field).toBe('body.source');

    // The test platform has no Unstructured API: refused before any run starts (the worker would fail its first batch).
    const key = uniqueId('unstructured');
    const unstructured = await p.app.inject({
      method: 'POST',
      url: `/v1/knowledge/${NS}/ingestions`,
      headers: { ...bearer(acme.keys.developer), 'idempotency-key': key },
      payload: { source, parser: 'unstructured' },
    });
    expect({ status: unstructured.statusCode, error: unstructured.json().error }).toMatchObject({
      status: 400,
      error: {
        message: 'parser "unstructured" is not available: this platform has no UNSTRUCTURED_API_URL',
        details: { field: 'body.parser' },
      },
    });
    await expect(p.temporal.workflow.getHandle(`ingestion/${acme.id}/${key}`).describe()).rejects.toThrow(
      'workflow not found',
    );
  });
});

describe('RAG chat', () => {
  let model: ReferenceModelServer;
  beforeAll(async () => {
    model = await startReferenceModelServer({ name: 'rag' });
    await serveModel(p.db, acme.id, 'rag-model', { v1: model.url }, { stable: 'v1', canary: null, canaryWeight: 0 });
    await untilRouted(p.app, acme.keys.developer, 'rag-model');
  });
  afterAll(async () => {
    await model?.close();
  });

  it('answers through the gateway with citations pointing at the retrieved chunks', async () => {
    const question = 'molten rock bursting out of a mountain';
    const res = await p.app.inject({
      method: 'POST',
      url: `/v1/knowledge/${NS}/chat`,
      headers: bearer(acme.keys.developer),
      payload: { model: 'rag-model', question, topK: 2 },
    });
    expect(res.statusCode).toBe(200);
    const body = res.json();
    expect(body.answer).toContain(question);
    expect(body.citations).toHaveLength(2);
    expect(body.citations[0]).toMatchObject({
      index: 1,
      documentId: 'volcanoes.pdf',
      source: { uri: `s3://${bucket}/${prefix}volcanoes.pdf` },
    });
    // The retrieved chunks went to the model: its prompt is far longer than the question alone.
    expect(body.usage.prompt_tokens).toBeGreaterThan(countTokens(question) + countTokens(body.citations[0].text));
    expect(model.requests.at(-1)).toMatchObject({ path: '/v1/chat/completions', model: 'rag-model' });
  });

  it('streams: a citations event first, then the model stream to [DONE]', async () => {
    const res = await p.app.inject({
      method: 'POST',
      url: `/v1/knowledge/${NS}/chat`,
      headers: bearer(acme.keys.developer),
      payload: { model: 'rag-model', question: 'how can I make leavened loaves at home', stream: true },
    });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toContain('text/event-stream');
    const events = res.body
      .split('\n\n')
      .filter(Boolean)
      .map((e) => e.replace(/^data: /, ''));
    const first = JSON.parse(events[0]!);
    expect(first.object).toBe('llmhub.citations');
    expect(first.citations[0]).toMatchObject({ index: 1, documentId: 'baking.docx' });
    expect(events.at(-1)).toBe('[DONE]');
    const text = events
      .slice(1, -1)
      .map((e) => JSON.parse(e).choices[0]?.delta?.content ?? '')
      .join('');
    expect(text).toContain('leavened loaves');
  });

  it('is 404 for a namespace of another tenant', async () => {
    const res = await p.app.inject({
      method: 'POST',
      url: `/v1/knowledge/${NS}/chat`,
      headers: bearer(rival.keys.developer),
      payload: { model: 'rag-model', question: 'x' },
    });
    expect(res.statusCode).toBe(404);
  });
});

describe('tenant isolation', () => {
  it('keeps another tenant out of a namespace: search, list, delete and progress by guessed id are 404', async () => {
    const ingestion = await p.app.inject({
      method: 'POST',
      url: `/v1/knowledge/${NS}/ingestions`,
      headers: { ...bearer(acme.keys.developer), 'idempotency-key': 'guessable' },
      payload: { source: { type: 's3', bucket, prefix } },
    });
    await p.temporal.workflow.getHandle(ingestion.json().workflowId).result();
    for (const res of [
      await search(rival, 'molten rock bursting out of a mountain'),
      await p.app.inject({ method: 'GET', url: `/v1/knowledge/${NS}/documents`, headers: bearer(rival.keys.viewer) }),
      await p.app.inject({ method: 'DELETE', url: `/v1/knowledge/${NS}`, headers: bearer(rival.keys.admin) }),
      await p.app.inject({
        method: 'GET',
        url: `/v1/knowledge/${NS}/ingestions/guessable`,
        headers: bearer(rival.keys.viewer),
      }),
    ]) {
      expect(res.statusCode).toBe(404);
    }
    expect((await search(acme, 'molten rock bursting out of a mountain')).statusCode).toBe(200);
  });

  it("never returns another tenant's points, even in a namespace of the same name", async () => {
    const rivalBucket = rival.bucket;
    await p.objects.put({ bucket: rivalBucket, key: 'r/lava.txt' }, 'Lava lamps contain wax that melts and floats.\n');
    await ingest(rival, { source: { type: 's3', bucket: rivalBucket, prefix: 'r/' } });
    const hits = (await search(rival, 'molten rock bursting out of a mountain')).json().hits;
    expect(hits.map((h: { documentId: string }) => h.documentId)).toEqual(['lava.txt']);
  });
});

describe('long ingestions', () => {
  it('continue as new between batches and carry their progress across runs', async () => {
    const input: IngestionInput = {
      tenantId: acme.id,
      namespace: 'continued',
      ingestionId: uniqueId('can'),
      source: { type: 's3', bucket, prefix },
      parser: 'builtin',
      chunking: { strategy: 'heading', size: 400, overlap: 50 },
      embedder: 'default',
      batchSize: 2,
      parallelism: 1,
      batchesPerRun: 1,
    };
    const handle = await p.temporal.workflow.start('ingestDocuments', {
      taskQueue: p.taskQueue,
      workflowId: `ingestion/${acme.id}/${input.ingestionId}`,
      args: [input],
    });
    const stats = (await handle.result()) as IngestionStats;
    expect(stats).toMatchObject({ total: 6, done: 5, failed: 1 });
    const firstRun = await p.temporal.workflow.getHandle(handle.workflowId, handle.firstExecutionRunId).fetchHistory();
    expect(firstRun.events!.at(-1)!.workflowExecutionContinuedAsNewEventAttributes).toBeTruthy();
    const latest = await p.temporal.workflow.getHandle(handle.workflowId).describe();
    expect(latest.runId).not.toBe(handle.firstExecutionRunId);
    const progress = await p.temporal.workflow.getHandle(handle.workflowId).query(ingestionContract.statusQuery);
    expect(progress).toMatchObject({ phase: 'completed', batchesDone: 3, batchesTotal: 3, done: 5 });
  });
});

describe('OpenAI-compatible embedder', () => {
  it('embeds through an OpenAI /v1/embeddings endpoint (the reference model server) into unit vectors', async () => {
    const server = await startReferenceModelServer({ name: 'embeddings' });
    try {
      const embedder = await OpenAiEmbedder.connect(server.url.replace(/\/v1$/, ''), 'reference-model');
      const [a, b, c] = await embedder.embed(['same text', 'same text', 'different text']);
      expect(embedder.id).toBe('openai:reference-model');
      expect(a!.length).toBe(embedder.dimensions);
      expect(Math.hypot(...a!)).toBeCloseTo(1, 5);
      expect(Array.from(a!)).toEqual(Array.from(b!));
      expect(Array.from(a!)).not.toEqual(Array.from(c!));
    } finally {
      await server.close();
    }
  });
});
