import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import type { Pool } from 'pg';
import { fileKey, type BatchEnding, type BatchInput, type BatchRef, type PageOutcome } from '../../contracts/batch';
import type { ObjectRef, ObjectStore } from '../../common/objectstore';
import { ServiceCredentials } from '../../common/service-credential';
import { BatchStore } from '../../common/store/batches';
import { BATCH_CONCURRENCY, NamedSlots, TENANT_BATCH_CONCURRENCY } from './limits';
import { pageRef, requestIdOf } from './objects';

export interface BatchActivityDeps {
  db: Pool;
  objects: ObjectStore;
  /** Base URL of the platform's gateway: batch lines take the same path as interactive calls. */
  gatewayUrl: string;
}

/** One line's answer, as OpenAI's output and error files hold it. */
export interface LineResult {
  id: string;
  custom_id: string;
  response: { status_code: number; request_id: string; body: unknown } | null;
  error: { code: string; message: string } | null;
}

export const BatchFailures = { inputMissing: 'BatchInputMissing' } as const;

/** The longest a line waits on one Retry-After; a longer one is waited in steps (each heartbeats). */
const MAX_RETRY_AFTER_MS = 30_000;
/** Tries of one line when the gateway cannot be reached, before the page's activity fails (and is retried). */
const CONNECT_TRIES = 5;

/** Page results the finish reads at once (S3 objects, or rows of a page cut short). */
const FINISH_READS = 8;
/** How often a page writes the results it has collected, in one statement. */
const RESULT_FLUSH_MS = 100;

const parseLines = (jsonl: Buffer): LineResult[] =>
  jsonl
    .toString('utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as LineResult);
const succeeded = (r: LineResult) => r.response !== null && r.response.status_code < 400;
const readObject = async (objects: ObjectStore, ref: ObjectRef, range?: { start: number; end?: number }) =>
  Buffer.concat(await (await objects.getStream(ref, range)).toArray());
const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => (clearTimeout(t), resolve()), { once: true });
  });

export type BatchPageInput = Pick<
  BatchInput,
  'tenantId' | 'batchId' | 'bucket' | 'endpoint' | 'inputFileId' | 'subject' | 'roles'
> & { page: number };

export const createBatchActivities = ({ db, objects, gatewayUrl }: BatchActivityDeps) => {
  const store = new BatchStore(db);
  const credentials = new ServiceCredentials(db);
  const perBatch = new NamedSlots(BATCH_CONCURRENCY);
  const perTenant = new NamedSlots(TENANT_BATCH_CONCURRENCY);

  async function inputFile(b: BatchRef, fileId: string) {
    const file = await store.getFile(b.tenantId, fileId);
    if (!file) throw ApplicationFailure.nonRetryable(`input file ${fileId} is gone`, BatchFailures.inputMissing);
    return file;
  }

  /** Sends one line through the gateway, waiting out rate limits; a refusal or failure is the line's result. */
  async function send(
    input: BatchPageInput,
    line: { custom_id: string; url: string; body: unknown },
    token: () => Promise<string>,
    signal: AbortSignal,
  ): Promise<LineResult> {
    const id = requestIdOf(input.batchId, line.custom_id);
    for (let tries = 1; ;) {
      let res: Response;
      try {
        res = await fetch(`${gatewayUrl}${line.url}`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${await token()}` },
          body: JSON.stringify(line.body),
          signal,
        });
      } catch (err) {
        if (signal.aborted || tries++ >= CONNECT_TRIES) throw err;
        await sleep(250 * 2 ** tries, signal);
        continue;
      }
      const text = await res.text();
      let body: unknown = text;
      try {
        body = JSON.parse(text);
      } catch {
        // not JSON: kept as text in the error file
      }
      const code = (body as { error?: { code?: unknown } } | undefined)?.error?.code;
      if (res.status === 429 && code !== 'budget_exceeded') {
        const after = Number(res.headers.get('retry-after'));
        await sleep(Math.min(MAX_RETRY_AFTER_MS, (Number.isFinite(after) && after > 0 ? after : 1) * 1000), signal);
        if (signal.aborted) throw signal.reason ?? new Error('cancelled');
        continue;
      }
      return {
        id,
        custom_id: line.custom_id,
        response: { status_code: res.status, request_id: res.headers.get('x-trace-id') ?? '', body },
        error: null,
      };
    }
  }

  return {
    /** A batch that cannot go on (its input file is gone) ends `failed`. */
    async batchFailed(b: BatchRef): Promise<void> {
      await store.moveBatch(b.tenantId, b.batchId, 'failed');
    },

    async batchStarted(b: BatchRef & { inputFileId: string }): Promise<{ pages: number; total: number }> {
      const file = await inputFile(b, b.inputFileId);
      await store.moveBatch(b.tenantId, b.batchId, 'in_progress');
      return { pages: file.pageOffsets.length, total: file.lineCount };
    },

    /**
     * One page of the input: its lines are read with one ranged GET, the lines that have no result yet are sent
     * (BATCH_CONCURRENCY per batch, TENANT_BATCH_CONCURRENCY per tenant on this worker) and each result is written
     * once, as a row keyed by the batch and its custom_id (batched every RESULT_FLUSH_MS; the first stays). So a retry
     * after a crash sends only what had no saved result: each line reaches the model at least once, and at most once
     * per attempt of its page. The finished page's results then go to S3 as one object in line order.
     */
    async batchPage(input: BatchPageInput): Promise<PageOutcome> {
      const ctx = Context.current();
      const signal = ctx.cancellationSignal;
      const page = pageRef(input, input.page);
      const outcomeOf = async (results: LineResult[]) => {
        const outcome = {
          page: input.page,
          completed: results.filter(succeeded).length,
          failed: results.filter((r) => !succeeded(r)).length,
        };
        await store.recordPage(input.tenantId, input.batchId, outcome);
        return outcome;
      };
      // Written by an attempt that died before it reported: nothing is left to send.
      if (await objects.head(page)) return outcomeOf(parseLines(await readObject(objects, page)));
      const file = await inputFile(input, input.inputFileId);
      const start = file.pageOffsets[input.page]!;
      const next = file.pageOffsets[input.page + 1];
      const raw = await readObject(
        objects,
        { bucket: input.bucket, key: file.objectKey },
        { start, ...(next !== undefined ? { end: next - 1 } : {}) },
      );
      const lines = raw
        .toString('utf8')
        .split('\n')
        .filter((l) => l.trim())
        .map((l) => JSON.parse(l) as { custom_id: string; url: string; body: unknown });
      const saved = await store.resultsOf(input.tenantId, input.batchId, input.page);
      let minted: { token: Promise<string>; at: number } | undefined;
      const token = () => {
        // Re-minted well before it expires, so a long page never sends an expired credential.
        if (!minted || Date.now() - minted.at > 5 * 60_000)
          minted = {
            at: Date.now(),
            token: credentials.mint({
              tenantId: input.tenantId,
              subject: input.subject,
              roles: input.roles,
              batchId: input.batchId,
            }),
          };
        return minted.token;
      };
      const unsaved: { customId: string; result: string }[] = [];
      let saving = Promise.resolve();
      const save = () => {
        const rows = unsaved.splice(0);
        if (rows.length) saving = saving.then(() => store.putResults(input.tenantId, input.batchId, input.page, rows));
        return saving;
      };
      // A page waiting on Retry-After sends nothing for a while; the heartbeat says the worker is still there.
      const beat = setInterval(() => ctx.heartbeat(), 1_000);
      // A failed write fails the page (its activity is retried); the chain keeps the failure for the last save.
      const flusher = setInterval(() => void save().catch(() => undefined), RESULT_FLUSH_MS);
      try {
        const results = await Promise.all(
          lines.map(async (line): Promise<LineResult> => {
            const had = saved.get(line.custom_id);
            if (had !== undefined) return JSON.parse(had) as LineResult;
            const result = await perTenant.run(input.tenantId, () =>
              perBatch.run(input.batchId, async () => {
                if (signal.aborted) throw signal.reason ?? new Error('cancelled');
                return send(input, line, token, signal);
              }),
            );
            unsaved.push({ customId: line.custom_id, result: JSON.stringify(result) });
            return result;
          }),
        );
        await save();
        await objects.put(page, results.map((r) => `${JSON.stringify(r)}\n`).join(''));
        await store.dropResults(input.tenantId, input.batchId, input.page);
        return await outcomeOf(results);
      } finally {
        clearInterval(beat);
        clearInterval(flusher);
        // What was answered before a cancel or a failure is kept for the partial output.
        await save().catch(() => undefined);
      }
    },

    /**
     * Writes the output and error files from every page's results (a page cut short by cancel or expiry gives the
     * lines that have one) and ends the batch. Repeatable: the files' ids and keys come from the workflow's input.
     */
    async batchFinish(
      input: BatchRef & { ending: BatchEnding; pages: number; outputFileId: string; errorFileId: string },
    ): Promise<{ completed: number; failed: number }> {
      await store.moveBatch(input.tenantId, input.batchId, 'finalizing');
      const resultsOf = async (page: number): Promise<LineResult[]> => {
        Context.current().heartbeat(page);
        if (await objects.head(pageRef(input, page)))
          return parseLines(await readObject(objects, pageRef(input, page)));
        const results = [...(await store.resultsOf(input.tenantId, input.batchId, page)).values()].map(
          (r) => JSON.parse(r) as LineResult,
        );
        // What a page cut short by cancel or expiry got done counts too.
        if (results.length > 0)
          await store.recordPage(input.tenantId, input.batchId, {
            page,
            completed: results.filter(succeeded).length,
            failed: results.filter((r) => !succeeded(r)).length,
          });
        return results;
      };
      // Pages read a few at a time: one after another, their round trips were most of the batch's last seconds.
      const reads = new NamedSlots(FINISH_READS);
      const pages = await Promise.all(
        Array.from({ length: input.pages }, (_, page) => reads.run('pages', () => resultsOf(page))),
      );
      const ok: string[] = [];
      const failed: string[] = [];
      for (const r of pages.flat()) (succeeded(r) ? ok : failed).push(`${JSON.stringify(r)}\n`);
      const write = async (id: string, lines: string[], filename: string) => {
        if (lines.length === 0) return null;
        const body = Buffer.from(lines.join(''));
        await objects.put({ bucket: input.bucket, key: fileKey(id) }, body, 'application/jsonl');
        await store.putFile(input.tenantId, {
          id,
          purpose: 'batch_output',
          filename,
          bytes: body.length,
          lineCount: lines.length,
          pageOffsets: [0],
          urls: [],
          objectKey: fileKey(id),
        });
        return id;
      };
      const outputFileId = await write(input.outputFileId, ok, `${input.batchId}_output.jsonl`);
      const errorFileId = await write(input.errorFileId, failed, `${input.batchId}_error.jsonl`);
      await store.moveBatch(input.tenantId, input.batchId, input.ending, { outputFileId, errorFileId });
      await store.dropResults(input.tenantId, input.batchId);
      return { completed: ok.length, failed: failed.length };
    },
  };
};

export type BatchActivities = ReturnType<typeof createBatchActivities>;
