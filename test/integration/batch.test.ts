import { execFile, execFileSync } from 'node:child_process';
import { createServer } from 'node:http';
import { connect } from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import {
  AbortMultipartUploadCommand,
  CreateMultipartUploadCommand,
  ListMultipartUploadsCommand,
} from '@aws-sdk/client-s3';
import { MockActivityEnvironment } from '@temporalio/testing';
import OpenAI, { toFile } from 'openai';
import { createBatchActivities } from '../../activities/batch';
import { pageRef } from '../../activities/batch/objects';
import { BatchStore } from '../../common/store/batches';
import { startReferenceModelServer, type ReferenceModelServer } from '../../deploy/dev/model-server/server';
import { freePort } from '../../deploy/dev/process';
import {
  BATCH_INPUT_FAILURE,
  BATCH_PAGE_LINES,
  batchContract,
  fileKey,
  workflowMetadataQuery,
} from '../../contracts/batch';
import { ServiceCredentials } from '../../common/service-credential';
import { knowledgePrefix, uploadsPrefix } from '../../common/documents';
import type { Logger } from '../../common/logger';
import { startUploadSweeper } from '../../api/upload-sweeper';
import { workflowId } from '../../contracts/operations';
import { serveModel, untilRouted } from '../support/gateway';
import { bearer, eventually, startTestPlatform, type TestPlatform, type TestTenant } from '../support/platform';
import { batchOf, chatLines, fileLines, multipart, untilBatch, uploadFile, type BatchObject } from '../support/batch';

const ROOT = path.resolve(__dirname, '..', '..');
const run = promisify(execFile);

let p: TestPlatform;
let acme: TestTenant;
let other: TestTenant;
let steady: ReferenceModelServer;
let flaky: ReferenceModelServer;
let slow: ReferenceModelServer;
let baseUrl: string;

beforeAll(async () => {
  const port = await freePort();
  baseUrl = `http://127.0.0.1:${port}`;
  p = await startTestPlatform({ activityDeps: { gatewayUrl: baseUrl } });
  await p.app.listen({ host: '127.0.0.1', port });
  [acme, other] = [await p.createTenant('batch'), await p.createTenant('batch-other')];
  steady = await startReferenceModelServer({ name: 'batch-steady' });
  flaky = await startReferenceModelServer({ name: 'batch-flaky', faults: { errorRate: 0.05 } });
  slow = await startReferenceModelServer({ name: 'batch-slow', faults: { latencyMs: 100 } });
  for (const [model, server] of [
    ['steady', steady],
    ['flaky', flaky],
    ['slow', slow],
  ] as const) {
    await serveModel(p.db, acme.id, model, { '1': server.url }, { stable: '1' });
    await untilRouted(p.app, acme.keys.developer, model);
  }
});
afterAll(async () => {
  await p?.close();
  await Promise.all([steady, flaky, slow].map((s) => s?.close()));
});

const inject = (key: string, method: 'GET' | 'POST' | 'DELETE', url: string, payload?: object) =>
  p.app.inject({ method, url, headers: bearer(key), ...(payload ? { payload } : {}) });

async function startBatch(tenant: TestTenant, content: string): Promise<BatchObject> {
  const file = await uploadFile(p.app, tenant.keys.developer, content);
  expect(file.statusCode).toBe(200);
  const created = await inject(tenant.keys.developer, 'POST', '/v1/batches', {
    input_file_id: file.json().id,
    endpoint: '/v1/chat/completions',
    completion_window: '24h',
  });
  expect(created.statusCode).toBe(200);
  return created.json();
}

const ids = (lines: { custom_id: string }[]) => lines.map((l) => l.custom_id).sort();

/** The bucket's unfinished multipart uploads (their keys, sorted), and one begun at a key as a writer would. */
const multipartUploads = (bucket: string) => ({
  uploads: async () =>
    ((await p.objects.client.send(new ListMultipartUploadsCommand({ Bucket: bucket }))).Uploads ?? [])
      .map((u) => u.Key)
      .sort(),
  open: (Key: string) =>
    p.objects.client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key })).then((u) => u.UploadId!),
});

/**
 * Waits until an ended batch has dropped what it kept while running (its page objects and saved rows), which it does
 * right after its status ends: the output is then the only copy of its answers.
 */
const untilPagesDropped = (tenant: TestTenant, batchId: string) =>
  eventually(`batch ${batchId}'s pages and saved rows to be dropped`, async () => {
    const pages = await p.objects.list(p.app.platform.storageScopes.bucketOf(tenant.id), `batches/${batchId}/pages/`);
    const { rows } = await p.db.query<{ n: number }>(
      'SELECT count(*)::int AS n FROM batch_results WHERE tenant_id = $1 AND batch_id = $2',
      [tenant.id, batchId],
    );
    return pages.length === 0 && rows[0]!.n === 0;
  });

/**
 * A model server of one test, routed as `model` for acme: each chat line is answered with `content(prompt)` as its
 * message, and lines from `holdFrom` on (a line's number is in its prompt, `line <n>`) wait until released. The routing
 * check's embeddings call has no messages and is answered at once.
 */
async function holdingUpstream(model: string, holdFrom: number, content: (prompt: string) => string) {
  let from = holdFrom;
  const held: { line: number; reply: () => void }[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = JSON.parse(Buffer.concat(chunks).toString()) as { messages?: { content: string }[] };
      const prompt = body.messages?.[0]?.content ?? 'ping';
      const reply = () =>
        res.writeHead(200, { 'content-type': 'application/json' }).end(
          JSON.stringify({
            id: 'chatcmpl-held',
            object: 'chat.completion',
            created: 1,
            model,
            choices: [{ index: 0, message: { role: 'assistant', content: content(prompt) }, finish_reason: 'stop' }],
            usage: { prompt_tokens: 2, completion_tokens: 1, total_tokens: 3 },
          }),
        );
      const line = Number(prompt.split(' ')[1]);
      if (line >= from) held.push({ line, reply });
      else reply();
    });
  });
  const port = await freePort();
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  await serveModel(p.db, acme.id, model, { '1': `http://127.0.0.1:${port}/v1` }, { stable: '1' });
  await untilRouted(p.app, acme.keys.developer, model);
  /** Answers the held lines before `upTo`, and holds no line before it from now on. */
  const release = (upTo = Infinity) => {
    from = upTo;
    for (const h of held.filter((x) => x.line < upTo)) h.reply();
    held.splice(0, held.length, ...held.filter((x) => x.line >= upTo));
  };
  return {
    held: () => held.length,
    release,
    close: () => (release(), server.close()),
  };
}

describe('files', () => {
  it('refuses a malformed line at upload, naming its line and field', async () => {
    const good = chatLines('steady', 3);
    const cases: [string, number, string][] = [
      [
        good + '{"custom_id":"req-0","method":"POST","url":"/v1/chat/completions","body":{"model":"steady"}}\n',
        4,
        'custom_id',
      ],
      [good.replace('"method":"POST"', '"method":"GET"'), 1, 'method'],
      [good + '{"custom_id":"x","method":"POST","url":"/v1/images","body":{"model":"m"}}\n', 4, 'url'],
      [good + 'not json\n', 4, 'the line'],
      // Kept as a row's key while the batch runs: PostgreSQL's text takes no NUL.
      [
        good + '{"custom_id":"a\\u0000b","method":"POST","url":"/v1/chat/completions","body":{"model":"m"}}\n',
        4,
        'custom_id',
      ],
      [
        good + '{"custom_id":"a\\ud800","method":"POST","url":"/v1/chat/completions","body":{"model":"m"}}\n',
        4,
        'custom_id',
      ],
      [good + '{"custom_id":"y","method":"POST","url":"/v1/embeddings","body":{}}\n', 4, 'body.model'],
      // Past 128 levels: the workflow's JSON would overflow the stack long before a model saw it.
      [
        `${good}{"custom_id":"z","method":"POST","url":"/v1/embeddings","body":{"model":"m","input":${'['.repeat(5000)}${']'.repeat(5000)}}}\n`,
        4,
        'the line',
      ],
    ];
    for (const [content, line, field] of cases) {
      const res = await uploadFile(p.app, acme.keys.developer, content);
      expect(res.statusCode).toBe(400);
      expect(res.json().error).toMatchObject({ details: { field: 'body.file', line, lineField: field } });
      expect(res.json().error.message).toContain(`line ${line}: ${field}`);
    }
  });

  it('reads an upload as it arrives: a file refused or cut off part-way leaves no object and no unfinished upload', async () => {
    const bucket = p.app.platform.storageScopes.bucketOf(acme.id);
    const stored = async () => (await p.objects.list(bucket, 'batches/files/')).map((o) => o.key).sort();
    const before = await stored();
    // More than one 5 MiB part, so the object store has a multipart upload under way when each one fails.
    const big = Array.from({ length: 3000 }, (_, i) =>
      JSON.stringify({
        custom_id: `big-${i}`,
        method: 'POST',
        url: '/v1/chat/completions',
        body: { model: 'steady', messages: [{ role: 'user', content: 'x'.repeat(4000) }] },
      }),
    )
      .map((l) => `${l}\n`)
      .join('');
    const bad = big.replace('"custom_id":"big-2990","method":"POST"', '"custom_id":"big-2990","method":"GET"');
    const refused = await uploadFile(p.app, acme.keys.developer, bad);
    expect(refused.statusCode).toBe(400);
    expect(refused.json().error.details).toEqual({ field: 'body.file', line: 2991, lineField: 'method' });

    // The purpose after the file: known only once the file is stored, which is then removed.
    const form = new FormData();
    form.set('file', new Blob([chatLines('steady', 2)]), 'input.jsonl');
    form.set('purpose', 'fine-tune');
    const late = new Request('http://local/', { method: 'POST', body: form });
    const wrongPurpose = await p.app.inject({
      method: 'POST',
      url: '/v1/files',
      headers: { ...bearer(acme.keys.developer), 'content-type': late.headers.get('content-type')! },
      payload: Buffer.from(await late.arrayBuffer()),
    });
    expect(wrongPurpose.statusCode).toBe(400);
    expect(wrongPurpose.json().error.details).toEqual({ field: 'body.purpose' });

    // A client that goes away after 10 MB of a 12 MB file.
    const { payload, contentType } = await multipart(big);
    const socket = connect({ host: '127.0.0.1', port: Number(new URL(baseUrl).port) });
    await new Promise((resolve) => socket.once('connect', resolve));
    socket.write(
      `POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${acme.keys.developer}\r\n` +
        `Content-Type: ${contentType}\r\nContent-Length: ${payload.length}\r\n\r\n`,
    );
    await new Promise((resolve) => socket.write(payload.subarray(0, 10 * 1024 * 1024), resolve));
    socket.destroy();

    await eventually(
      'no unfinished multipart upload in the tenant bucket',
      async () => (await multipartUploads(bucket).uploads()).length === 0,
    );
    expect(await stored()).toEqual(before);
    // And a whole one of the same size is stored as sent (in parts), and a batch reads its pages by byte range.
    const b = await startBatch(acme, big);
    const content = await p.app.inject({
      method: 'GET',
      url: `/v1/files/${b.input_file_id}/content`,
      headers: bearer(acme.keys.viewer),
    });
    expect(content.body).toBe(big);
    const done = await untilBatch(p.app, acme.keys.viewer, b.id, ['completed']);
    expect(done.request_counts).toEqual({ total: 3000, completed: 3000, failed: 0 });
  });

  it("aborts the unfinished uploads of exactly one key, as a finish retried after a worker died does for its files'", async () => {
    const bucket = p.app.platform.storageScopes.bucketOf(acme.id);
    const key = fileKey('file-abandoned-output');
    const { uploads, open } = multipartUploads(bucket);
    await open(key);
    await open(key);
    // A longer key that the listing's prefix also finds.
    const longer = await open(`${key}.old`);
    expect(await uploads()).toEqual([key, key, `${key}.old`]);
    expect(await p.objects.abortUploads({ bucket, key })).toBe(2);
    expect(await uploads()).toEqual([`${key}.old`]);
    expect(await p.objects.abortUploads({ bucket, key })).toBe(0);
    await p.objects.client.send(
      new AbortMultipartUploadCommand({ Bucket: bucket, Key: `${key}.old`, UploadId: longer }),
    );
    expect(await uploads()).toEqual([]);
  });

  it('aborts the uploads an api process left unfinished once the request timeout rules them out, and no others', async () => {
    const bucket = p.app.platform.storageScopes.bucketOf(acme.id);
    const { uploads, open } = multipartUploads(bucket);
    // What a killed api process leaves: a batch file's and a knowledge document's upload under way.
    const abandoned = [fileKey('file-killed-mid-upload'), `${uploadsPrefix(acme.id, 'docs')}killed.md`];
    // The tenant's own uploads with its S3 keys, in its bucket and beside its documents.
    const own = [
      'datasets/big.bin',
      `${knowledgePrefix(acme.id)}docs/notes.bin`,
      `${knowledgePrefix(acme.id)}docs/drafts/uploads/notes.bin`,
    ];
    for (const key of [...abandoned, ...own]) await open(key);
    const sweeper = startUploadSweeper({
      tenants: p.app.platform.tenants,
      scopes: p.app.platform.storageScopes,
      objects: p.objects,
      requestTimeoutMs: 300_000,
      logger: p.app.log as unknown as Logger,
    });
    try {
      // Just begun: such uploads may still be running.
      expect(await sweeper.sweep()).toBe(0);
      expect(await uploads()).toEqual([...abandoned, ...own].sort());
      // An hour on, past the request timeout and its margin.
      expect(await sweeper.sweep(Date.now() + 3_600_000)).toBe(2);
      expect(await uploads()).toEqual([...own].sort());
    } finally {
      await sweeper.close();
      for (const key of own) await p.objects.abortUploads({ bucket, key });
    }
    expect(await uploads()).toEqual([]);
  });

  it("serves a file's content as its object is now, and 404 once the tenant removed it with its S3 keys", async () => {
    const file = (await uploadFile(p.app, acme.keys.developer, chatLines('steady', 3))).json();
    const ref = { bucket: p.app.platform.storageScopes.bucketOf(acme.id), key: fileKey(file.id) };
    const content = () =>
      p.app.inject({ method: 'GET', url: `/v1/files/${file.id}/content`, headers: bearer(acme.keys.viewer) });
    // Rewritten shorter: the answer's length is the object's, not the upload's.
    await p.objects.put(ref, chatLines('steady', 1));
    const rewritten = await content();
    expect(rewritten.statusCode).toBe(200);
    expect(rewritten.body).toBe(chatLines('steady', 1));
    expect(rewritten.headers['content-length']).toBe(String(Buffer.byteLength(chatLines('steady', 1))));
    await p.objects.delete(ref);
    const gone = await content();
    expect(gone.statusCode).toBe(404);
    expect(gone.json().error.message).toBe(`file '${file.id}' has no content: it was removed from the tenant's bucket`);
  });

  it("answers 404 for another tenant's file and batch", async () => {
    const b = await startBatch(acme, chatLines('steady', 2));
    await untilBatch(p.app, acme.keys.viewer, b.id, ['completed']);
    const fileId = b.input_file_id;
    for (const [method, url] of [
      ['GET', `/v1/files/${fileId}`],
      ['GET', `/v1/files/${fileId}/content`],
      ['DELETE', `/v1/files/${fileId}`],
      ['GET', `/v1/batches/${b.id}`],
      ['POST', `/v1/batches/${b.id}/cancel`],
    ] as const) {
      expect({ url, status: (await inject(other.keys.admin, method, url)).statusCode }).toEqual({ url, status: 404 });
    }
    const stolen = await inject(other.keys.admin, 'POST', '/v1/batches', {
      input_file_id: fileId,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    });
    expect(stolen.statusCode).toBe(404);
    expect((await inject(other.keys.admin, 'GET', '/v1/batches')).json().data).toEqual([]);
    expect((await inject(acme.keys.viewer, 'GET', `/v1/files/${fileId}`)).statusCode).toBe(200);
  });

  it("refuses a batch's service credential on any route but inference", async () => {
    const token = await new ServiceCredentials(p.db).mint({
      tenantId: acme.id,
      subject: 'key:none',
      roles: ['admin'],
      batchId: 'batch_x',
    });
    expect((await inject(token, 'GET', '/v1/batches')).statusCode).toBe(403);
    // On an inference route it is the creator's key that must still be valid: this one names no key.
    const chat = await inject(token, 'POST', '/v1/chat/completions', {
      model: 'steady',
      messages: [{ role: 'user', content: 'hi' }],
    });
    expect(chat.statusCode).toBe(401);
  });
});

describe('batches', () => {
  it('works with the official openai client: files.create, batches.create/retrieve/list/cancel, files.content', async () => {
    const client = new OpenAI({ apiKey: acme.keys.developer, baseURL: `${baseUrl}/v1`, maxRetries: 0 });
    const file = await client.files.create({
      file: await toFile(Buffer.from(chatLines('steady', 20)), 'input.jsonl'),
      purpose: 'batch',
    });
    expect(file).toMatchObject({ object: 'file', purpose: 'batch', filename: 'input.jsonl', status: 'processed' });
    const created = await client.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
      metadata: { run: 'sdk' },
    });
    expect(created).toMatchObject({ object: 'batch', input_file_id: file.id, metadata: { run: 'sdk' } });
    const done = await eventually('the batch to complete', async () => {
      const b = await client.batches.retrieve(created.id);
      return b.status === 'completed' ? b : undefined;
    });
    expect(done.request_counts).toEqual({ total: 20, completed: 20, failed: 0 });
    const output = (await (await client.files.content(done.output_file_id!)).text())
      .split('\n')
      .filter(Boolean)
      .map(
        (l) =>
          JSON.parse(l) as {
            custom_id: string;
            response: { status_code: number; body: { choices: { message: { content: string } }[] } };
          },
      );
    expect(output).toHaveLength(20);
    for (const line of output) {
      expect(line.response.status_code).toBe(200);
      // Each answer is to its own line's prompt.
      expect(line.response.body.choices[0]!.message.content).toBe(
        `Reference reply to: line ${line.custom_id.slice(4)}`,
      );
    }
    const listed = [];
    for await (const b of client.batches.list({ limit: 1 })) listed.push(b.id);
    expect(listed).toContain(created.id);
    // files.list pages through every file of the tenant, newest first or, with order asc, oldest first.
    const files = async (query: OpenAI.Files.FileListParams) => {
      const ids: string[] = [];
      for await (const f of client.files.list(query)) ids.push(f.id);
      return ids;
    };
    const newestFirst = await files({ limit: 2 });
    expect(newestFirst).toEqual(expect.arrayContaining([file.id, done.output_file_id]));
    expect(await files({ limit: 3, order: 'asc' })).toEqual([...newestFirst].reverse());
    expect(await files({ order: 'asc', purpose: 'batch_output' })).toEqual(
      [...newestFirst].reverse().filter((id) => /-(output|error)$/.test(id)),
    );
    // Cancelling an ended batch leaves it as it ended.
    expect((await client.batches.cancel(created.id)).status).toBe('completed');
    // What the Temporal UI and the status query show.
    const handle = p.temporal.workflow.getHandle(workflowId('batch', acme.id, created.id));
    expect(await handle.query(batchContract.statusQuery)).toMatchObject({
      status: 'completed',
      requestCounts: { total: 20, completed: 20, failed: 0 },
    });
    const metadata = await handle.query(workflowMetadataQuery);
    expect(metadata.currentDetails).toContain('20 completed, 0 failed of 20 requests');
  });

  it("works with OpenAI's Python client: chat, its stream, embeddings, models, files and batches, cancel and delete with empty bodies", async () => {
    const python = execFileSync('bash', [path.join(ROOT, 'test/contract/install.sh')], { encoding: 'utf8' }).trim();
    const { stdout } = await run(python, [path.join(ROOT, 'test/contract/openai_client.py')], {
      env: { ...process.env, BASE: baseUrl, KEY: acme.keys.developer, MODEL: 'steady' },
    });
    expect(JSON.parse(stdout)).toEqual({
      chat: 'Reference reply to: hello',
      stream: 'Reference reply to: hello',
      streamUsage: expect.any(Number),
      embeddings: [true, true],
      model: { id: 'steady', object: 'model', owned_by: acme.id, created: true },
      modelListed: true,
      unknownModel: { class: 'NotFoundError', status: 404 },
      batch: { status: 'completed', counts: { total: 3, completed: 3, failed: 0 } },
      output: ['py-0', 'py-1', 'py-2'],
      listed: true,
      cancelEnded: 'completed',
      deleted: true,
      deletedFile: { class: 'NotFoundError', status: 404 },
    });
  });

  it('honours Idempotency-Key: the same key and body give the same batch, running or ended; another body 422', async () => {
    const fileId = (await uploadFile(p.app, acme.keys.developer, chatLines('steady', 2))).json().id as string;
    const create = (run: string) =>
      p.app.inject({
        method: 'POST',
        url: '/v1/batches',
        headers: { ...bearer(acme.keys.developer), 'idempotency-key': 'nightly-1' },
        payload: {
          input_file_id: fileId,
          endpoint: '/v1/chat/completions',
          completion_window: '24h',
          metadata: { run },
        },
      });
    const first = (await create('a')).json() as BatchObject;
    expect((await create('a')).json()).toMatchObject({ id: first.id });
    await untilBatch(p.app, acme.keys.viewer, first.id, ['completed']);
    expect((await create('a')).json()).toMatchObject({ id: first.id, status: 'completed' });
    const other = await create('b');
    expect(other.statusCode).toBe(422);
    expect(other.json().error).toMatchObject({ type: 'idempotency_key_reused', details: { field: 'Idempotency-Key' } });
    const listed = (await inject(acme.keys.viewer, 'GET', '/v1/batches?limit=100')).json().data as BatchObject[];
    expect(listed.filter((b) => b.input_file_id === fileId).map((b) => b.id)).toEqual([first.id]);
  });

  it('puts the lines the model server failed (5%) in the error file with the error body, the rest in the output', async () => {
    const before = flaky.received();
    const b = await startBatch(acme, chatLines('flaky', 400));
    const done = await untilBatch(p.app, acme.keys.viewer, b.id, ['completed']);
    const injected = Math.floor(flaky.received() * 0.05) - Math.floor(before * 0.05);
    expect(injected).toBeGreaterThanOrEqual(19);
    const [output, errors] = await Promise.all([
      fileLines(p.app, acme.keys.viewer, done.output_file_id),
      fileLines(p.app, acme.keys.viewer, done.error_file_id),
    ]);
    expect(errors).toHaveLength(injected);
    expect(done.request_counts).toEqual({ total: 400, completed: 400 - injected, failed: injected });
    await untilPagesDropped(acme, b.id);
    for (const e of errors)
      expect(e.response).toMatchObject({ status_code: 502, body: { error: { code: 'upstream_5xx' } } });
    expect([...ids(output), ...ids(errors)].sort()).toEqual(
      ids(
        chatLines('flaky', 400)
          .split('\n')
          .filter(Boolean)
          .map((l) => JSON.parse(l) as { custom_id: string }),
      ),
    );
  });

  it('cancel mid-run stops the lines in flight and ends cancelled with the partial output', async () => {
    const b = await startBatch(acme, chatLines('slow', 3000));
    await eventually('some lines to be answered', async () => slow.received() >= 200);
    const cancelling = await inject(acme.keys.developer, 'POST', `/v1/batches/${b.id}/cancel`);
    expect(cancelling.statusCode).toBe(200);
    expect(cancelling.json().status).toBe('cancelling');
    const done = await untilBatch(p.app, acme.keys.viewer, b.id, ['cancelled']);
    const output = await fileLines(p.app, acme.keys.viewer, done.output_file_id);
    expect(output.length).toBeGreaterThan(0);
    expect(output.length).toBeLessThan(3000);
    expect(new Set(ids(output)).size).toBe(output.length);
    expect(done.request_counts.completed).toBe(output.length);
    await untilPagesDropped(acme, b.id);
  });

  it('past the completion window ends expired with the partial output', async () => {
    // A window of seconds for this batch only: 3000 lines at 100 ms each, 32 at a time, need more than 9 s.
    const platform = p.app.platform;
    platform.batchCompletionWindowMs = 4_000;
    let b: BatchObject;
    try {
      b = await startBatch(acme, chatLines('slow', 3000));
    } finally {
      platform.batchCompletionWindowMs = 24 * 3_600_000;
    }
    const done = await untilBatch(p.app, acme.keys.viewer, b.id, ['expired']);
    expect(done).toMatchObject({ completion_window: '24h', expired_at: expect.any(Number) });
    const output = await fileLines(p.app, acme.keys.viewer, done.output_file_id);
    expect(output.length).toBeGreaterThan(0);
    expect(output.length).toBeLessThan(3000);
    expect(new Set(ids(output)).size).toBe(output.length);
    expect(done.request_counts).toMatchObject({ total: 3000, completed: output.length });
  });

  it('fails with errors naming the line when the input was rewritten in the tenant bucket after upload', async () => {
    // The tenant's own S3 keys can write its bucket: the same size passes the start's check, a page finds the line.
    const content = chatLines('steady', 600);
    const file = await uploadFile(p.app, acme.keys.developer, content);
    const lines = content.split('\n');
    lines[249] = 'x'.repeat(lines[249]!.length);
    await p.objects.put(
      { bucket: p.app.platform.storageScopes.bucketOf(acme.id), key: fileKey(file.json().id) },
      lines.join('\n'),
    );
    const created = await inject(acme.keys.developer, 'POST', '/v1/batches', {
      input_file_id: file.json().id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    });
    const done = await untilBatch(p.app, acme.keys.viewer, created.json().id, ['failed']);
    expect(done).toMatchObject({ failed_at: expect.any(Number), output_file_id: null });
    expect(done.errors).toEqual({
      object: 'list',
      data: [
        {
          code: 'invalid_json_line',
          message: `line 250 of the input file ${file.json().id} is not JSON`,
          param: 'input_file_id',
          line: 250,
        },
      ],
    });
    expect((await inject(acme.keys.viewer, 'GET', `/v1/batches/${done.id}`)).json().errors).toEqual(done.errors);
  });

  it("writes a page's object as its answers come, in line order, not once the page has ended", async () => {
    // 300 lines of 64 KB answers (19 MB, over S3's 5 MiB part): the last 20 are held until the page's upload has begun.
    const big = (prompt: string) => `${prompt}:${'x'.repeat(64 * 1024)}`;
    const upstream = await holdingUpstream('big', 280, big);
    try {
      const b = await startBatch(acme, chatLines('big', 300));
      const pages = multipartUploads(acme.bucket);
      await eventually("the page's upload to have begun while 20 of its lines wait", async () => {
        const uploading = (await pages.uploads()).filter((k) => k?.startsWith(`batches/${b.id}/pages/`));
        return uploading.length === 1 && upstream.held() === 20;
      });
      expect((await batchOf(p.app, acme.keys.viewer, b.id)).status).toBe('in_progress');
      upstream.release();
      const done = await untilBatch(p.app, acme.keys.viewer, b.id, ['completed']);
      expect(done.request_counts).toEqual({ total: 300, completed: 300, failed: 0 });
      const output = await fileLines(p.app, acme.keys.viewer, done.output_file_id);
      expect(output.map((l) => l.custom_id)).toEqual(Array.from({ length: 300 }, (_, i) => `req-${i}`));
      for (const [i, l] of output.entries())
        expect(l.response?.body).toMatchObject({ choices: [{ message: { content: big(`line ${i}`) } }] });
      await untilPagesDropped(acme, b.id);
      expect((await pages.uploads()).filter((k) => k?.startsWith(`batches/${b.id}/`))).toEqual([]);
    } finally {
      upstream.close();
    }
  });

  it("saves a page's answers at the next save when a save failed, so a cancel keeps every answered line", async () => {
    // Lines from 100 on are held until released; the page's first save (of the first 100 answers) is refused.
    const upstream = await holdingUpstream('held', 100, (prompt) => prompt);
    let refuseSave: () => void = () => undefined;
    const refused = new Promise<void>((resolve) => (refuseSave = resolve));
    let savesRefused = 0;
    const db = {
      query: (...args: Parameters<typeof p.db.query>) => {
        if (savesRefused === 0 && String(args[0]).includes('INSERT INTO batch_results')) {
          savesRefused++;
          refuseSave();
          return Promise.reject(new Error('injected: the database refused the first save'));
        }
        return (p.db.query as (...a: unknown[]) => Promise<unknown>)(...args);
      },
    } as unknown as typeof p.db;
    try {
      const file = (await uploadFile(p.app, acme.keys.developer, chatLines('held', 300))).json();
      const batchId = `batch_saves_${Date.now()}`;
      await new BatchStore(p.db).createBatch(acme.id, {
        id: batchId,
        endpoint: '/v1/chat/completions',
        inputFileId: file.id,
        completionWindow: '24h',
        metadata: null,
        createdBy: 'test',
        total: 300,
        expiresAt: Date.now() + 3_600_000,
      });
      const env = new MockActivityEnvironment();
      const page = env.run(createBatchActivities({ db, objects: p.objects, gatewayUrl: baseUrl }).batchPage, {
        tenantId: acme.id,
        batchId,
        bucket: acme.bucket,
        page: 0,
        endpoint: '/v1/chat/completions' as const,
        inputFileId: file.id,
        subject: `key:${acme.keys.developer.split('_')[1]}`,
        roles: ['developer'],
      });
      const ended = page.then(
        () => 'completed',
        (err: Error) => err.name,
      );
      const saved = async () =>
        (await p.db.query<{ n: number }>('SELECT count(*)::int AS n FROM batch_results WHERE batch_id = $1', [batchId]))
          .rows[0]!.n;
      await refused;
      upstream.release(200);
      // Before, every save after a failed one was skipped, and the failed one's answers were gone: this stayed 0.
      await eventually(
        'the next save to write both its answers and the refused ones',
        async () => (await saved()) === 200,
      );
      env.cancel();
      // Stopped by the cancel (the mock's reason is an AbortError, a worker's a CancelledFailure).
      expect(await ended).not.toBe('completed');
      expect(await saved()).toBe(200);
      expect(savesRefused).toBe(1);
    } finally {
      upstream.close();
    }
  });

  it("fails, not retries for ever, when a page's stored results were rewritten in the tenant bucket", async () => {
    // The page objects are in the tenant's bucket: its S3 keys can write them between a page's end and the finish, or
    // before a page's retry reads them. Called directly: a batch run cannot be stopped at that point on purpose.
    const activities = createBatchActivities({ db: p.db, objects: p.objects, gatewayUrl: baseUrl });
    const ref = { tenantId: acme.id, batchId: `batch_rewritten_${Date.now()}`, bucket: acme.bucket };
    await new BatchStore(p.db).createBatch(acme.id, {
      id: ref.batchId,
      endpoint: '/v1/chat/completions',
      inputFileId: 'file-gone',
      completionWindow: '24h',
      metadata: null,
      createdBy: 'test',
      total: 2,
      expiresAt: Date.now() + 3_600_000,
    });
    const answer = `{"id":"batch_req_${'0'.repeat(24)}","custom_id":"a","response":{"status_code":200,"request_id":"t","body":{}},"error":null}`;
    await p.objects.put(pageRef(ref, 0), `${answer}\n`);
    const outputs = { outputFileId: `${ref.batchId}-output`, errorFileId: `${ref.batchId}-error` };
    const refusal = (run: Promise<unknown>) =>
      run.then(
        () => undefined,
        (err: { type?: string; nonRetryable?: boolean; details?: unknown[] }) => ({
          type: err.type,
          nonRetryable: err.nonRetryable,
          detail: err.details?.[0],
        }),
      );
    const expected = {
      type: BATCH_INPUT_FAILURE,
      nonRetryable: true,
      detail: {
        code: 'batch_results_unreadable',
        message:
          "the stored results of page 2 of this batch were changed in the tenant's bucket and are not its output lines",
        param: null,
        line: null,
      },
    };
    for (const rewritten of ['not json\n', '{"custom_id":7}\n', `${answer}\nnull\n`]) {
      await p.objects.put(pageRef(ref, 1), rewritten);
      const finish = new MockActivityEnvironment().run(activities.batchFinish, {
        ...ref,
        ...outputs,
        ending: 'completed' as const,
        pages: 2,
      });
      expect(await refusal(finish)).toEqual(expected);
      // A page's retry reads what its first attempt wrote before sending anything.
      const retried = new MockActivityEnvironment({ attempt: 2 }).run(activities.batchPage, {
        ...ref,
        page: 1,
        endpoint: '/v1/chat/completions' as const,
        inputFileId: 'file-gone',
        subject: 'test',
        roles: ['developer'],
      });
      expect(await refusal(retried)).toEqual(expected);
    }
    // The finish wrote no file, and left no part of one behind.
    for (const id of Object.values(outputs))
      expect(await p.objects.head({ bucket: acme.bucket, key: fileKey(id) })).toBeUndefined();
    expect((await multipartUploads(acme.bucket).uploads()).filter((k) => k?.startsWith('batches/files/'))).toEqual([]);
  });

  it('keeps one output line per custom_id when the input was rewritten to repeat one after upload', async () => {
    // Line 1,050 (page 1) takes line 101's custom_id (page 0), same size (a space for the shorter id): only the first
    // result stands.
    const content = chatLines('steady', BATCH_PAGE_LINES + 100);
    const file = await uploadFile(p.app, acme.keys.developer, content);
    await p.objects.put(
      { bucket: p.app.platform.storageScopes.bucketOf(acme.id), key: fileKey(file.json().id) },
      content.replace(`"custom_id":"req-${BATCH_PAGE_LINES + 49}"`, '"custom_id": "req-100"'),
    );
    const created = await inject(acme.keys.developer, 'POST', '/v1/batches', {
      input_file_id: file.json().id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    });
    const done = await untilBatch(p.app, acme.keys.viewer, created.json().id, ['completed']);
    const output = await fileLines(p.app, acme.keys.viewer, done.output_file_id);
    expect(output).toHaveLength(BATCH_PAGE_LINES + 99);
    expect(new Set(ids(output)).size).toBe(BATCH_PAGE_LINES + 99);
    expect(ids(output)).not.toContain(`req-${BATCH_PAGE_LINES + 49}`);
    expect(done.request_counts).toEqual({
      total: BATCH_PAGE_LINES + 100,
      completed: BATCH_PAGE_LINES + 99,
      failed: 0,
    });
    await untilPagesDropped(acme, done.id);
  });
});
