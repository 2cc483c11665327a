import { EventEmitter } from 'node:events';
import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import type { Pool } from 'pg';
import { Agent, request } from 'undici';
import {
  BATCH_INPUT_FAILURE,
  BATCH_PAGE_LINES,
  fileKey,
  type BatchEnding,
  type BatchError,
  type BatchInput,
  type BatchRef,
  type PageOutcome,
} from '../../contracts/batch';
import { isMissingBucket, isNotFound, type ObjectRef, type ObjectStore } from '../../common/objectstore';
import { ServiceCredentials } from '../../common/service-credential';
import { isStorableText } from '../../common/storable-text';
import { BatchStore, ENDED, type BatchFile } from '../../common/store/batches';
import { BATCH_CONCURRENCY, NamedSlots, TENANT_BATCH_CONCURRENCY } from './limits';
import { pageRef, pagesPrefix, requestIdsOf } from './objects';
import { inOrder, Lines, JsonlUpload, pagesAhead } from './output';

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

/** One line's output line (JSON text) and whether it goes to the output file (else to the error file). */
interface SentLine {
  customId: string;
  text: string;
  ok: boolean;
}

/**
 * The batch's input cannot be used: a failure no retry mends, whose detail becomes the failed batch's `errors`. The
 * input's object is in the tenant's own bucket, which the tenant can write with its S3 keys after the upload's checks.
 */
const inputError = (
  code: string,
  message: string,
  line: number | null = null,
  param: string | null = 'input_file_id',
) => ApplicationFailure.nonRetryable(message, BATCH_INPUT_FAILURE, { code, message, param, line } satisfies BatchError);
/**
 * A page's stored results are not this batch's output lines: its object is in the tenant's bucket, which the tenant's
 * keys can write. No retry mends that; before, each retry failed on it again and the batch never ended.
 */
const resultsError = (page: number) =>
  inputError(
    'batch_results_unreadable',
    `the stored results of page ${page + 1} of this batch were changed in the tenant's bucket and are not its output lines`,
    null,
    null,
  );

/** The longest a line waits on one Retry-After; a longer one is waited in steps (each heartbeats). */
const MAX_RETRY_AFTER_MS = 30_000;
/** Tries of one line when the gateway cannot be reached, before the page's activity fails (and is retried). */
const CONNECT_TRIES = 5;

/** A page's credential is minted again after this long, well before it expires, so a long page never sends an expired one. */
const REMINT_MS = 5 * 60_000;

/**
 * A page hands its answers to its object once this many bytes of them are ready in line order...
 */
const PAGE_WRITE_BYTES = 256 * 1024;
/**
 * ...and its lanes wait while this much is handed over and not yet taken by the upload, which itself holds up to three
 * parts (putStream): a page holds about 24 MiB at most, whatever its answers' size. Held whole until the page ended, a
 * page of 1,536-dimension embeddings was 32 MB, eight of them in flight per batch, and a 1,000-line page of larger ones
 * 619 MB. Lanes wait only when the upload falls this far behind, so it runs beside their calls, not between them.
 */
const PAGE_WRITE_AHEAD_BYTES = 8 * 1024 * 1024;
/** Page results the finish reads at once (S3 objects, or rows of a page cut short), when they are small... */
const FINISH_READS = 8;
/** ...and as many as fit in this when they are not (pagesAhead). */
const FINISH_AHEAD_BYTES = 64 * 1024 * 1024;
/**
 * How often a page saves the answers it got since its last save, in one statement. A worker that dies re-sends only
 * what was in flight and answered since then; without these saves it re-sent every answered line of its pages in
 * flight (up to 8 × 1,000 calls, each metered and billed again). Once a second, not every 100 ms as before: the
 * statements were PostgreSQL's share of a line's cost.
 */
const RESULT_SAVE_MS = 1_000;

/** The start of an output line as `send` writes it: its custom_id (JSON string) and status come first. */
const SENT_HEAD =
  /^\{"id":"batch_req_[0-9a-f]{24}","custom_id":("(?:[^"\\]|\\.)*"),"response":\{"status_code":(\d{3}),/;
/**
 * An output line's custom_id and whether it goes to the output file, from its `start` (the line, or its first bytes).
 * The finish reads every line of the batch: its head is read without parsing the answer's body. Anything else (a page
 * object is in the tenant's bucket, which the tenant's keys can write) is parsed whole.
 */
const headOf = (start: string, whole = () => start): { customId: string; ok: boolean } | undefined => {
  try {
    const head = SENT_HEAD.exec(start);
    if (head) return { customId: JSON.parse(head[1]!) as string, ok: Number(head[2]) < 400 };
    const r = JSON.parse(whole()) as Partial<LineResult> | null;
    if (typeof r?.custom_id !== 'string') return undefined;
    const status = r.response?.status_code;
    return { customId: r.custom_id, ok: typeof status === 'number' && status < 400 };
  } catch {
    return undefined;
  }
};
/** Saved lines of `page` as its rows hold them, which only this code writes. */
const sentLine = (text: string, page: number): SentLine => {
  const head = headOf(text);
  if (!head) throw resultsError(page);
  return { ...head, text };
};
/** A page's counts from its answers. */
const countsOf = (answers: { ok: boolean }[]) => {
  const completed = answers.filter((r) => r.ok).length;
  return { completed, failed: answers.length - completed };
};
/** A custom_id has at most 512 characters, each at most 6 bytes in JSON: a line's head is within its first bytes. */
const HEAD_BYTES = 4096;
const NEWLINE = Buffer.from('\n');
/** An output line as stored: its bytes, newline included (a view of the object read, not a copy). */
type StoredLine = { customId: string; ok: boolean; bytes: Buffer };
const storedLines = (jsonl: Buffer, page: number): StoredLine[] => {
  const lines: StoredLine[] = [];
  for (let start = 0; start < jsonl.length;) {
    const newline = jsonl.indexOf(0x0a, start);
    const end = newline === -1 ? jsonl.length : newline;
    if (end > start) {
      const head = headOf(jsonl.toString('utf8', start, Math.min(end, start + HEAD_BYTES)), () =>
        jsonl.toString('utf8', start, end),
      );
      if (!head) throw resultsError(page);
      const bytes = newline === -1 ? Buffer.concat([jsonl.subarray(start), NEWLINE]) : jsonl.subarray(start, end + 1);
      lines.push({ ...head, bytes });
    }
    start = end + 1;
  }
  return lines;
};
const readObject = async (objects: ObjectStore, ref: ObjectRef, range?: { start: number; end?: number }) =>
  Buffer.concat(await (await objects.getStream(ref, range)).toArray());
/** An object's content, or undefined when there is none. */
const readIfThere = (objects: ObjectStore, ref: ObjectRef) =>
  readObject(objects, ref).catch((err: unknown) => {
    if (isNotFound(err)) return undefined;
    throw err;
  });
const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => (clearTimeout(t), resolve()), { once: true });
  });

/** Lines per page of a file: files uploaded while pages were 200 lines keep them (each file's offsets are stored). */
const linesPerPage = (f: BatchFile) =>
  f.pageOffsets.length === Math.ceil(f.lineCount / BATCH_PAGE_LINES) ? BATCH_PAGE_LINES : 200;

type InputLine = { custom_id: string; url: string; body: unknown };

/** A line as the upload checked it, again: the object may have been rewritten in the tenant's bucket since. */
function inputLine(text: string, input: Pick<BatchInput, 'endpoint' | 'inputFileId'>, n: number): InputLine {
  let line: Partial<InputLine> | null;
  try {
    line = JSON.parse(text) as Partial<InputLine>;
  } catch {
    throw inputError('invalid_json_line', `line ${n} of the input file ${input.inputFileId} is not JSON`, n);
  }
  if (typeof line?.custom_id !== 'string' || line.url !== input.endpoint || typeof line.body !== 'object')
    throw inputError(
      'invalid_request',
      `line ${n} of the input file ${input.inputFileId} is not a request to ${input.endpoint} with a custom_id`,
      n,
    );
  // Kept as a row's key while the page runs, as the upload checked.
  if (!isStorableText(line.custom_id))
    throw inputError(
      'invalid_request',
      `line ${n} of the input file ${input.inputFileId} has a custom_id with a NUL character or an unpaired UTF-16 surrogate`,
      n,
    );
  return line as InputLine;
}

export type BatchPageInput = Pick<
  BatchInput,
  'tenantId' | 'batchId' | 'bucket' | 'endpoint' | 'inputFileId' | 'subject' | 'roles'
> & { page: number };

export const createBatchActivities = ({ db, objects, gatewayUrl }: BatchActivityDeps) => {
  const store = new BatchStore(db);
  const credentials = new ServiceCredentials(db);
  const perBatch = new NamedSlots(BATCH_CONCURRENCY);
  const perTenant = new NamedSlots(TENANT_BATCH_CONCURRENCY);
  // Keep-alive connections to the gateway for every line of this worker's batches: fetch's per-call cost (its Request,
  // Headers and stream objects) was a good part of what a batch line cost beyond the same call made directly.
  const gateway = new Agent({ connections: TENANT_BATCH_CONCURRENCY, keepAliveTimeout: 30_000 });

  async function inputFile(b: BatchRef, fileId: string) {
    const file = await store.getFile(b.tenantId, fileId);
    if (!file) throw inputError('input_file_missing', `the input file ${fileId} was deleted`);
    return file;
  }

  /**
   * What a batch kept while it ran: its page objects and saved rows. Once its files are written (or it failed) the output
   * is the only copy of its answers: pages left behind would keep each answer a second time, unseen by the Files API and
   * still there after the tenant deletes the output file.
   */
  async function dropPages(b: BatchRef) {
    // Every page has ended: an upload still unfinished is one whose worker died.
    await objects.abortUploadsBefore(b.bucket, pagesPrefix(b), new Date());
    // A bucket already removed holds no pages (tenant deletion waits for operations to end, so this is defensive).
    const pages = await objects.list(b.bucket, pagesPrefix(b)).catch((err: unknown) => {
      if (isMissingBucket(err)) return [];
      throw err;
    });
    const deletes = new NamedSlots(FINISH_READS);
    await Promise.all(pages.map((o) => deletes.run('pages', () => objects.delete({ bucket: b.bucket, key: o.key }))));
    await store.dropResults(b.tenantId, b.batchId);
  }

  /**
   * Sends one line through the gateway, waiting out rate limits; a refusal or failure is the line's result, as its
   * output line (JSON text). The answer's JSON goes into the line as it came when it is one line already (it was parsed,
   * so it is valid JSON); only a multi-line or non-JSON body is serialised again.
   */
  async function send(
    line: { custom_id: string; url: string; body: unknown },
    id: string,
    headers: Record<string, string>,
    signal: AbortSignal,
    stop: EventEmitter,
  ): Promise<SentLine> {
    for (let tries = 1; ;) {
      let res: Awaited<ReturnType<typeof request>>;
      try {
        res = await request(`${gatewayUrl}${line.url}`, {
          method: 'POST',
          headers,
          body: JSON.stringify(line.body),
          // The lane's emitter, not the activity's AbortSignal: an EventTarget listener per request (added and removed
          // by undici) was a visible share of a line's CPU; the page turns the activity's cancel into 'abort' events.
          signal: stop,
          dispatcher: gateway,
        });
      } catch (err) {
        if (signal.aborted || tries++ >= CONNECT_TRIES) throw err;
        await sleep(250 * 2 ** tries, signal);
        continue;
      }
      const status = res.statusCode;
      const text = await res.body.text();
      let body: unknown = text;
      let json = false;
      try {
        body = JSON.parse(text);
        json = true;
      } catch {
        // not JSON: kept as text in the error file
      }
      if (status === 429 && (body as { error?: { code?: unknown } } | null)?.error?.code !== 'budget_exceeded') {
        const after = Number(res.headers['retry-after']);
        await sleep(Math.min(MAX_RETRY_AFTER_MS, (Number.isFinite(after) && after > 0 ? after : 1) * 1000), signal);
        if (signal.aborted) throw signal.reason ?? new Error('cancelled');
        continue;
      }
      const traceId = res.headers['x-trace-id'];
      const head = `{"id":"${id}","custom_id":${JSON.stringify(line.custom_id)},"response":{"status_code":${status},"request_id":${JSON.stringify(typeof traceId === 'string' ? traceId : '')},"body":`;
      const bodyText = json && !text.includes('\n') ? text : JSON.stringify(body);
      return { customId: line.custom_id, text: `${head}${bodyText}},"error":null}`, ok: status < 400 };
    }
  }

  return {
    /** A batch that cannot go on ends `failed`, with its input's errors when that is why. */
    async batchFailed(b: BatchRef & { errors?: BatchError[] }): Promise<void> {
      await store.moveBatch(b.tenantId, b.batchId, 'failed', {}, b.errors);
      await dropPages(b);
    },

    async batchStarted(b: BatchRef & { inputFileId: string }): Promise<{ pages: number; total: number }> {
      const file = await inputFile(b, b.inputFileId);
      // The size the upload checked: pages are read at its byte offsets, so another object would be cut wrongly.
      const head = await objects.head({ bucket: b.bucket, key: file.objectKey });
      if (!head) throw inputError('input_file_unreadable', `the input file ${file.id} has no content in storage`);
      if (head.sizeBytes !== file.bytes)
        throw inputError(
          'input_file_changed',
          `the input file ${file.id} has ${head.sizeBytes} bytes in storage, not the ${file.bytes} that were uploaded`,
        );
      await store.moveBatch(b.tenantId, b.batchId, 'in_progress');
      return { pages: file.pageOffsets.length, total: file.lineCount };
    },

    /**
     * One page of the input: its lines are read with one ranged GET, sent (BATCH_CONCURRENCY per batch,
     * TENANT_BATCH_CONCURRENCY per tenant on this worker), and their results kept in memory until the page's object is
     * written to S3 whole, in line order; meanwhile they are saved every RESULT_SAVE_MS as rows keyed by the batch and
     * custom_id (dropped once the object is written). An attempt cut short (cancel, expiry, a failure) saves the rest it
     * had answered, for the partial output and for a retry, which sends only what has no row. A worker that dies loses
     * the answers since its last save: the retry sends those lines again, so each line reaches the model at least once
     * and at most once per attempt of its page, and the output still has one line per custom_id (the page object's).
     */
    async batchPage(input: BatchPageInput): Promise<PageOutcome> {
      const ctx = Context.current();
      const signal = ctx.cancellationSignal;
      const page = pageRef(input, input.page);
      // Only a retried attempt can find results of this page: a run hands over only once its pages have ended.
      const retried = ctx.info.attempt > 1;
      const outcomeOf = async (counts: { completed: number; failed: number }) => {
        const outcome = { page: input.page, ...counts };
        await store.recordPage(input.tenantId, input.batchId, outcome);
        return outcome;
      };
      // Written by an attempt that died before it reported: nothing is left to send.
      const written = retried ? await readIfThere(objects, page) : undefined;
      if (written) return outcomeOf(countsOf(storedLines(written, input.page)));
      const file = await inputFile(input, input.inputFileId);
      const start = file.pageOffsets[input.page]!;
      const end = file.pageOffsets[input.page + 1];
      const raw = await readObject(
        objects,
        { bucket: input.bucket, key: file.objectKey },
        { start, ...(end !== undefined ? { end: end - 1 } : {}) },
      ).catch((err: unknown) => {
        throw isNotFound(err)
          ? inputError('input_file_unreadable', `the input file ${file.id} is gone from storage`)
          : err;
      });
      const first = input.page * linesPerPage(file) + 1;
      const lines = raw
        .toString('utf8')
        .split('\n')
        .filter((l) => l.trim())
        .map((l, i) => inputLine(l, input, first + i));
      const idOf = requestIdsOf(input.batchId);
      const saved = retried
        ? await store.resultsOf(input.tenantId, input.batchId, input.page)
        : new Map<string, string>();
      const mint = async () => {
        const token = await credentials.mint({
          tenantId: input.tenantId,
          subject: input.subject,
          roles: input.roles,
          batchId: input.batchId,
        });
        // One headers object per credential: undici reads it, each line need not build its own.
        return { at: Date.now(), headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` } };
      };
      let auth: Awaited<ReturnType<typeof mint>> | undefined;
      let minting: Promise<void> | undefined;
      const remint = () =>
        (minting ??= mint().then(
          (a) => ((auth = a), (minting = undefined)),
          (err: unknown) => {
            minting = undefined;
            throw err;
          },
        ));
      // Answers not saved yet; a save writes them in one statement (the first row per custom_id stays).
      const unsaved: { customId: string; result: string }[] = [];
      let rows = saved.size > 0;
      let saving = Promise.resolve();
      const save = () => {
        const batch = unsaved.splice(0);
        if (batch.length) {
          rows = true;
          // Each save runs whatever the one before it did: chained on a failed one, no later save of the page ran, and
          // what it had taken was gone (a cancel's partial output then missed answered lines). A failed statement wrote
          // none of its rows; they go back for the next save.
          saving = saving
            .catch(() => undefined)
            .then(() => store.putResults(input.tenantId, input.batchId, input.page, batch))
            .catch((err: unknown) => {
              unsaved.unshift(...batch);
              throw err;
            });
        }
        return saving;
      };
      let stored = false;
      // The page's object, written as its answers come in line order (see PAGE_WRITE_BYTES); it exists once ended.
      const object = new JsonlUpload(objects, page);
      const results: (SentLine | undefined)[] = new Array<SentLine | undefined>(lines.length);
      const counts = { completed: 0, failed: 0 };
      /** Lines before it are in `ready` or handed to the object; their results are dropped. */
      let next = 0;
      let ready = '';
      let readyLines = 0;
      let handedBytes = 0;
      let writing = Promise.resolve();
      const hand = () => {
        if (readyLines === 0) return;
        // One buffer per hand-over, not one per line: each is a write through the upload's stream.
        const run = new Lines();
        const bytes = Buffer.from(ready);
        run.add(bytes, readyLines);
        ready = '';
        readyLines = 0;
        handedBytes += bytes.length;
        writing = writing.then(async () => {
          await object.write(run);
          handedBytes -= bytes.length;
        });
        // Awaited by a lane past the bound, and at the page's end; until then a failed upload is not unhandled.
        writing.catch(() => undefined);
      };
      /** Moves the results now ready in line order to the object's next write. */
      const advance = () => {
        for (let r = results[next]; r !== undefined; r = results[next]) {
          ready += `${r.text}\n`;
          readyLines++;
          counts[r.ok ? 'completed' : 'failed']++;
          results[next++] = undefined;
        }
        // Characters, not bytes: close enough for a bound.
        if (ready.length >= PAGE_WRITE_BYTES) hand();
      };
      // The activity's cancel reaches the line in flight of each lane through the lane's own emitter, which holds one
      // listener at a time (an emitter shared by the page's lanes held 32, each removal a search).
      const laneStops: EventEmitter[] = [];
      const onCancel = () => laneStops.forEach((stop) => stop.emit('abort'));
      signal.addEventListener('abort', onCancel, { once: true });
      // A page waiting on Retry-After sends nothing for a while; the heartbeat says the worker is still there.
      const beat = setInterval(() => ctx.heartbeat(), 1_000);
      const saver = setInterval(() => void save().catch(() => undefined), RESULT_SAVE_MS);
      try {
        const todo: number[] = [];
        for (const [i, line] of lines.entries()) {
          const had = saved.get(line.custom_id);
          if (had !== undefined) results[i] = sentLine(had, input.page);
          else todo.push(i);
        }
        advance();
        // Lanes, not a promise per line: each lane holds one of the batch's slots and one of the tenant's while it
        // takes the page's next line, so a line costs no semaphore hand-over of its own; a lane gives its slots back
        // when the page has no line left for it, to the next page's lanes. The batch's slot is taken first: a batch
        // waiting for its turn then holds none of its tenant's slots, which its tenant's other batches can use. Every
        // lane ends before the page does, so an attempt cut short saves all it had answered; after a line failed, no
        // lane takes another.
        let taken = 0;
        let failure: { err: unknown } | undefined;
        const lane = () =>
          perBatch
            .run(input.batchId, () =>
              perTenant.run(input.tenantId, async () => {
                const stop = new EventEmitter();
                laneStops.push(stop);
                while (taken < todo.length && !failure) {
                  if (signal.aborted) throw signal.reason ?? new Error('cancelled');
                  if (!auth || Date.now() - auth.at > REMINT_MS) await remint();
                  const i = todo[taken++]!;
                  const line = lines[i]!;
                  const result = await send(line, idOf(first + i), auth!.headers, signal, stop);
                  results[i] = result;
                  unsaved.push({ customId: line.custom_id, result: result.text });
                  if (i === next) advance();
                  if (handedBytes >= PAGE_WRITE_AHEAD_BYTES) await writing;
                }
              }),
            )
            .catch((err: unknown) => {
              failure ??= { err };
            });
        await Promise.all(Array.from({ length: Math.min(BATCH_CONCURRENCY, todo.length) }, lane));
        if (failure) throw failure.err;
        clearInterval(saver);
        // The page object holds every answer: a save still running must end before its rows are dropped, and one that
        // failed lost nothing.
        await saving.catch(() => undefined);
        // Sent in parts when large: a page joined into one string failed past V8's limit (~512 MiB), on every retry,
        // each of which sent its lines to the model again.
        hand();
        await writing;
        await object.end();
        stored = true;
        if (rows) await store.dropResults(input.tenantId, input.batchId, input.page);
        return await outcomeOf(counts);
      } finally {
        clearInterval(beat);
        clearInterval(saver);
        signal.removeEventListener('abort', onCancel);
        if (!stored) {
          // An object of part of the page must never appear: its upload is dropped, parts and all.
          await object.abort(new Error('the page ended before all its lines were answered'));
          await writing.catch(() => undefined);
          // What was answered before a cancel or a failure is kept for the partial output and the page's retry.
          await save().catch(() => undefined);
        }
      }
    },

    /**
     * Writes the output and error files from every page's results (a page cut short by cancel or expiry gives the
     * lines that have one) and ends the batch. Repeatable: the files' ids and keys come from the workflow's input.
     */
    async batchFinish(
      input: BatchRef & { ending: BatchEnding; pages: number; outputFileId: string; errorFileId: string },
    ): Promise<{ completed: number; failed: number }> {
      const ctx = Context.current();
      // An earlier attempt ended the batch, its files written, and may have dropped some pages since: only what is left
      // of its pages and rows is to do.
      const ended = await store.getBatch(input.tenantId, input.batchId);
      if (ended && ENDED.includes(ended.status)) {
        await dropPages(input);
        return { completed: ended.requestCounts.completed, failed: ended.requestCounts.failed };
      }
      await store.moveBatch(input.tenantId, input.batchId, 'finalizing');
      const files = [input.outputFileId, input.errorFileId].map((id) => ({ bucket: input.bucket, key: fileKey(id) }));
      // An attempt that died mid-way left its uploads unfinished; the files' keys are this batch's alone.
      if (ctx.info.attempt > 1) await Promise.all(files.map((ref) => objects.abortUploads(ref)));
      const resultsOf = async (page: number): Promise<StoredLine[]> => {
        ctx.heartbeat(page);
        // One GET: a page's object is there unless the page was cut short.
        const object = await readIfThere(objects, pageRef(input, page));
        if (object) return storedLines(object, page);
        const results = [...(await store.resultsOf(input.tenantId, input.batchId, page)).values()].map((text) => ({
          ...sentLine(text, page),
          bytes: Buffer.from(`${text}\n`),
        }));
        // What a page cut short by cancel or expiry got done counts too.
        if (results.length > 0) await store.recordPage(input.tenantId, input.batchId, { page, ...countsOf(results) });
        return results;
      };
      const [ok, failed] = files.map((ref) => new JsonlUpload(objects, ref)) as [JsonlUpload, JsonlUpload];
      try {
        // custom_ids are unique at upload, but the tenant's S3 keys can rewrite the input afterwards: a repeated one
        // keeps its first result only, and its page's counts are recorded again without the others.
        const seen = new Set<string>();
        // Pages read a few at a time (one after another, their round trips were most of the batch's last seconds)
        // and written in their order as they come: only those few pages are held, not the whole output.
        const sizes = (await objects.list(input.bucket, pagesPrefix(input))).map((o) => o.sizeBytes);
        const ahead = pagesAhead(sizes, FINISH_READS, FINISH_AHEAD_BYTES);
        for await (const [page, results] of inOrder(input.pages, ahead, resultsOf)) {
          let dropped = false;
          const kept = { ok: new Lines(), failed: new Lines() };
          for (const r of results) {
            if (seen.has(r.customId)) {
              dropped = true;
              continue;
            }
            seen.add(r.customId);
            kept[r.ok ? 'ok' : 'failed'].add(r.bytes);
          }
          await ok.write(kept.ok);
          await failed.write(kept.failed);
          if (dropped)
            await store.recordPage(input.tenantId, input.batchId, {
              page,
              completed: kept.ok.count,
              failed: kept.failed.count,
            });
        }
        await Promise.all([ok.end(), failed.end()]);
      } catch (err) {
        await Promise.all([ok.abort(err as Error), failed.abort(err as Error)]);
        throw err;
      }
      const record = async (file: JsonlUpload, id: string, filename: string) => {
        if (file.lines === 0) return null;
        await store.putFile(input.tenantId, {
          id,
          purpose: 'batch_output',
          filename,
          bytes: file.bytes,
          lineCount: file.lines,
          pageOffsets: [0],
          urls: [],
          objectKey: fileKey(id),
        });
        return id;
      };
      const outputFileId = await record(ok, input.outputFileId, `${input.batchId}_output.jsonl`);
      const errorFileId = await record(failed, input.errorFileId, `${input.batchId}_error.jsonl`);
      await store.moveBatch(input.tenantId, input.batchId, input.ending, { outputFileId, errorFileId });
      await dropPages(input);
      return { completed: ok.lines, failed: failed.lines };
    },
  };
};

export type BatchActivities = ReturnType<typeof createBatchActivities>;
