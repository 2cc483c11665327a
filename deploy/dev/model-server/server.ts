/**
 * The reference model server: a TEST/DEV FIXTURE standing in for vLLM/TGI/Triton behind the OpenAI API.
 * It answers /v1/chat/completions (plain and SSE streaming), /v1/completions, /v1/embeddings and /v1/models
 * with deterministic replies, plays scripted tool calls, and injects latency, time to first token, errors and
 * mid-stream failures on demand (flags at start, `POST /admin/faults` at run time). It records every request,
 * including those whose client went away before the answer ended, so tests can prove aborts reach it.
 */
import { createHash } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface Faults {
  /** Delay before the response headers (models queueing). */
  latencyMs: number;
  /** Delay between the headers and the first streamed token. */
  ttftMs: number;
  /** Delay between streamed tokens. */
  tokenIntervalMs: number;
  /** Fraction (0-1) of requests answered with `errorStatus`; deterministic: exactly every 1/rate-th request. */
  errorRate: number;
  errorStatus: number;
  /** When set, a stream is cut (socket destroyed) after this many data events. */
  failAfterChunks: number | null;
  /** Words in every reply, padded with filler; null: the reply echoes the prompt. */
  replyTokens: number | null;
  /** 1: /v1/models (the readiness probe of a deployed server) answers 503, as a server whose weights never load. */
  notReady: number;
}

export const DEFAULT_FAULTS: Faults = {
  latencyMs: 0,
  ttftMs: 0,
  tokenIntervalMs: 0,
  errorRate: 0,
  errorStatus: 500,
  failAfterChunks: null,
  replyTokens: null,
  notReady: 0,
};

export interface RecordedRequest {
  seq: number;
  path: string;
  model: string | undefined;
  stream: boolean;
  headers: Record<string, string | string[] | undefined>;
  /** True when the client closed the connection before the response ended. */
  aborted: boolean;
  completed: boolean;
}

export interface ReferenceModelServer {
  name: string;
  port: number;
  /** Base URL of the OpenAI API, as a gateway's version endpoint (…/v1). */
  url: string;
  faults: Faults;
  /** The newest requests (bounded); `received()` counts all of them. */
  requests: RecordedRequest[];
  received(): number;
  close(): Promise<void>;
}

/** Keeps the request log bounded for benchmarks that send hundreds of thousands of requests. */
const MAX_RECORDED = 5_000;
const FILLER = 'lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor'.split(' ');

type Json = Record<string, unknown>;
interface ChatMessage {
  role: string;
  content?: unknown;
  name?: string;
  tool_call_id?: string;
}

const textOf = (content: unknown): string =>
  typeof content === 'string'
    ? content
    : Array.isArray(content)
      ? content
          .map((p) => (p && typeof p === 'object' && 'text' in p ? String((p as { text: unknown }).text) : ''))
          .join(' ')
      : '';

/** Tokens as the fixture counts them: one per started group of 4 characters, like the usual rule of thumb. */
export const countTokens = (text: string): number => Math.ceil(text.length / 4);

/**
 * What the model "says". Scripts, chosen by the last message: `/tool <name> <json args>` makes the model call that
 * tool; a `tool` message makes it answer with the tool's result; anything else is echoed back.
 * Multi-step scripts (agent runs): a user message of several `/tool` lines makes the model call them one per turn,
 * in order, each after the previous one's tool message; and a tool result holding a `/tool` line is obeyed, as a
 * gullible model would obey an instruction injected into a document.
 */
type Script = { kind: 'text'; words: string[] } | { kind: 'tool'; name: string; args: string };

const scriptLines = (text: string): Script[] =>
  text.split('\n').flatMap((line) => {
    const m = /^\/tool\s+([\w-]+)\s*(.*)$/.exec(line.trim());
    return m ? [{ kind: 'tool' as const, name: m[1]!, args: m[2]!.trim() || '{}' }] : [];
  });

function scriptFor(messages: ChatMessage[], faults: Faults, maxTokens: number | undefined): Script {
  const last = messages[messages.length - 1];
  const text = textOf(last?.content);
  const tool = /^\/tool\s+([\w-]+)\s*(.*)$/s.exec(text.trim());
  if (last?.role === 'user' && tool) {
    const steps = scriptLines(text);
    return steps.length > 1 ? steps[0]! : { kind: 'tool', name: tool[1]!, args: tool[2]!.trim() || '{}' };
  }
  if (last?.role === 'tool') {
    const u = messages.map((m) => m.role).lastIndexOf('user');
    const steps = u >= 0 ? scriptLines(textOf(messages[u]!.content)) : [];
    const done = messages
      .slice(u + 1)
      .filter((m) => m.role === 'assistant' && Array.isArray((m as { tool_calls?: unknown }).tool_calls)).length;
    if (steps.length > 1 && done < steps.length) return steps[done]!;
    const injected = scriptLines(text)[0];
    if (injected) return injected;
  }
  const base = last?.role === 'tool' ? `The tool returned: ${text}` : `Reference reply to: ${text}`;
  return { kind: 'text', words: replyWords(base, faults, maxTokens) };
}

function replyWords(base: string, faults: Faults, maxTokens: number | undefined): string[] {
  let words = base.split(/\s+/).filter(Boolean);
  if (faults.replyTokens !== null) {
    words = words.slice(0, faults.replyTokens);
    for (let i = 0; words.length < faults.replyTokens; i++) words.push(FILLER[i % FILLER.length]!);
  }
  return maxTokens !== undefined ? words.slice(0, Math.max(0, maxTokens)) : words;
}

/** A deterministic unit vector from the text, so equal inputs embed equally and tests can check values. */
export function embed(text: string, dimensions: number): number[] {
  const out: number[] = [];
  for (let i = 0; out.length < dimensions; i++) {
    const h = createHash('sha256').update(`${i}:${text}`).digest();
    for (let j = 0; j + 4 <= h.length && out.length < dimensions; j += 4) out.push(h.readInt32LE(j) / 2 ** 31);
  }
  const norm = Math.sqrt(out.reduce((a, v) => a + v * v, 0)) || 1;
  return out.map((v) => v / norm);
}

const delay = (ms: number, signal: AbortSignal) =>
  ms <= 0 || signal.aborted
    ? Promise.resolve()
    : new Promise<void>((resolve) => {
        const t = setTimeout(resolve, ms);
        signal.addEventListener('abort', () => (clearTimeout(t), resolve()), { once: true });
      });

export async function startReferenceModelServer(
  /** `host`: 127.0.0.1 unless set (a container listens on 0.0.0.0). */
  opts: {
    name?: string;
    host?: string;
    port?: number;
    models?: string[];
    faults?: Partial<Faults>;
    /** Receives one JSON line per recorded request (main.ts: stdout, which `kubectl logs` reads in a pod). */
    logRequest?: (line: string) => void;
  } = {},
): Promise<ReferenceModelServer> {
  const name = opts.name ?? 'reference';
  const models = opts.models ?? ['reference-model'];
  const faults: Faults = { ...DEFAULT_FAULTS, ...opts.faults };
  const requests: RecordedRequest[] = [];
  let seq = 0;
  let failed = 0;
  const created = Math.floor(Date.now() / 1000);

  const shouldFail = (n: number) => {
    if (faults.errorRate <= 0) return false;
    if (Math.floor(n * faults.errorRate) > failed) {
      failed++;
      return true;
    }
    return false;
  };

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      handle(req, res, Buffer.concat(chunks)).catch((err: Error) => {
        if (!res.headersSent)
          sendJson(res, 500, { error: { message: err.message, type: 'server_error', param: null, code: null } });
        else res.destroy();
      });
    });
  });
  server.keepAliveTimeout = 65_000;

  async function handle(req: http.IncomingMessage, res: http.ServerResponse, raw: Buffer): Promise<void> {
    const path = (req.url ?? '/').split('?')[0]!;
    if (path.startsWith('/admin/')) return admin(req, res, path, raw);
    // The liveness/readiness probe of a deployed model server, as vLLM and TGI answer it; never recorded.
    if (req.method === 'GET' && path === '/health') return sendJson(res, 200, { status: 'ok' });
    if (req.method === 'GET' && path === '/v1/models') {
      if (faults.notReady)
        return sendJson(res, 503, {
          error: { message: `${name} is not ready`, type: 'server_error', param: null, code: 'not_ready' },
        });
      return sendJson(res, 200, {
        object: 'list',
        data: models.map((id) => ({ id, object: 'model', created, owned_by: name })),
      });
    }
    let body: Json;
    try {
      body = raw.length ? (JSON.parse(raw.toString('utf8')) as Json) : {};
    } catch {
      return sendJson(res, 400, {
        error: { message: 'request body is not valid JSON', type: 'invalid_request_error', param: null, code: null },
      });
    }
    const record: RecordedRequest = {
      seq: ++seq,
      path,
      model: typeof body.model === 'string' ? body.model : undefined,
      stream: body.stream === true,
      headers: req.headers,
      aborted: false,
      completed: false,
    };
    requests.push(record);
    opts.logRequest?.(
      JSON.stringify({
        msg: 'request',
        server: name,
        seq: record.seq,
        path,
        model: record.model,
        stream: record.stream,
      }),
    );
    if (requests.length > MAX_RECORDED) requests.splice(0, requests.length - MAX_RECORDED);
    const ac = new AbortController();
    res.on('close', () => {
      if (!res.writableFinished) {
        record.aborted = true;
        ac.abort();
      }
    });
    res.on('finish', () => (record.completed = true));
    res.setHeader('x-reference-server', name);

    await delay(faults.latencyMs, ac.signal);
    if (ac.signal.aborted) return;
    if (shouldFail(record.seq)) {
      return sendJson(res, faults.errorStatus, {
        error: { message: `injected failure from ${name}`, type: 'server_error', param: null, code: 'injected' },
      });
    }
    if (req.method !== 'POST')
      return sendJson(res, 405, {
        error: { message: `${req.method} not allowed`, type: 'invalid_request_error', param: null, code: null },
      });
    if (typeof body.model !== 'string')
      return sendJson(res, 400, {
        error: { message: 'model is required', type: 'invalid_request_error', param: 'model', code: null },
      });
    const model = body.model;
    const id = `${path.includes('chat') ? 'chatcmpl' : 'cmpl'}-${name}-${record.seq}`;
    const maxTokens =
      typeof body.max_tokens === 'number'
        ? body.max_tokens
        : typeof body.max_completion_tokens === 'number'
          ? body.max_completion_tokens
          : undefined;
    const includeUsage = (body.stream_options as { include_usage?: boolean } | undefined)?.include_usage === true;

    if (path === '/v1/embeddings') {
      const inputs = Array.isArray(body.input) ? body.input : [body.input];
      const dims = typeof body.dimensions === 'number' ? body.dimensions : 16;
      const texts = inputs.map((i) => (typeof i === 'string' ? i : JSON.stringify(i)));
      const data = texts.map((t, index) => {
        const v = embed(t, dims);
        const embedding =
          body.encoding_format === 'base64' ? Buffer.from(new Float32Array(v).buffer).toString('base64') : v;
        return { object: 'embedding', index, embedding };
      });
      const prompt = texts.reduce((a, t) => a + countTokens(t), 0);
      return sendJson(res, 200, {
        object: 'list',
        data,
        model,
        usage: { prompt_tokens: prompt, total_tokens: prompt },
      });
    }

    let script: Script;
    let promptTokens: number;
    const chat = path === '/v1/chat/completions';
    if (chat) {
      const messages = Array.isArray(body.messages) ? (body.messages as ChatMessage[]) : [];
      script = scriptFor(messages, faults, maxTokens);
      promptTokens = messages.reduce((a, m) => a + countTokens(textOf(m.content)), 0);
    } else if (path === '/v1/completions') {
      const prompt = Array.isArray(body.prompt) ? body.prompt.join('\n') : String(body.prompt ?? '');
      script = { kind: 'text', words: replyWords(`Reference completion of: ${prompt}`, faults, maxTokens) };
      promptTokens = countTokens(prompt);
    } else {
      return sendJson(res, 404, {
        error: { message: `no route ${path}`, type: 'invalid_request_error', param: null, code: 'not_found' },
      });
    }
    const pieces =
      script.kind === 'text' ? script.words.map((w, i) => (i === 0 ? w : ` ${w}`)) : splitArgs(script.args);
    const completionTokens = script.kind === 'text' ? pieces.length : countTokens(script.args);
    const finish =
      script.kind === 'tool'
        ? 'tool_calls'
        : maxTokens !== undefined && pieces.length >= maxTokens && maxTokens > 0
          ? 'length'
          : 'stop';
    const usage = {
      prompt_tokens: promptTokens,
      completion_tokens: completionTokens,
      total_tokens: promptTokens + completionTokens,
    };
    const base = { id, created: Math.floor(Date.now() / 1000), model, system_fingerprint: name };
    const toolCallId = `call_${id}`;

    if (body.stream !== true) {
      if (!chat) {
        return sendJson(res, 200, {
          ...base,
          object: 'text_completion',
          choices: [{ index: 0, text: pieces.join(''), finish_reason: finish, logprobs: null }],
          usage,
        });
      }
      const message =
        script.kind === 'tool'
          ? {
              role: 'assistant',
              content: null,
              tool_calls: [
                { id: toolCallId, type: 'function', function: { name: script.name, arguments: script.args } },
              ],
            }
          : { role: 'assistant', content: pieces.join('') };
      return sendJson(res, 200, {
        ...base,
        object: 'chat.completion',
        choices: [{ index: 0, message, finish_reason: finish, logprobs: null }],
        usage,
      });
    }

    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
    res.flushHeaders();
    await delay(faults.ttftMs, ac.signal);
    let sent = 0;
    const event = async (data: unknown): Promise<boolean> => {
      if (ac.signal.aborted) return false;
      if (faults.failAfterChunks !== null && sent >= faults.failAfterChunks) {
        res.destroy();
        return false;
      }
      if (sent > 0) await delay(faults.tokenIntervalMs, ac.signal);
      if (ac.signal.aborted) return false;
      sent++;
      res.write(`data: ${JSON.stringify(data)}\n\n`);
      return true;
    };
    const chunk = (delta: Json, finishReason: string | null) =>
      chat
        ? {
            ...base,
            object: 'chat.completion.chunk',
            choices: [{ index: 0, delta, finish_reason: finishReason, logprobs: null }],
          }
        : {
            ...base,
            object: 'text_completion',
            choices: [
              {
                index: 0,
                text: (delta.content as string | undefined) ?? '',
                finish_reason: finishReason,
                logprobs: null,
              },
            ],
          };

    if (
      chat &&
      !(await event(
        chunk(
          script.kind === 'tool'
            ? {
                role: 'assistant',
                content: null,
                tool_calls: [
                  {
                    index: 0,
                    id: toolCallId,
                    type: 'function',
                    function: { name: script.kind === 'tool' ? script.name : '', arguments: '' },
                  },
                ],
              }
            : { role: 'assistant', content: '' },
          null,
        ),
      ))
    )
      return;
    for (const piece of pieces) {
      const delta =
        script.kind === 'tool' ? { tool_calls: [{ index: 0, function: { arguments: piece } }] } : { content: piece };
      if (!(await event(chunk(delta, null)))) return;
    }
    if (!(await event(chunk({}, finish)))) return;
    if (
      includeUsage &&
      !(await event({ ...base, object: chat ? 'chat.completion.chunk' : 'text_completion', choices: [], usage }))
    )
      return;
    res.end('data: [DONE]\n\n');
  }

  function admin(req: http.IncomingMessage, res: http.ServerResponse, path: string, raw: Buffer): void {
    if (path === '/admin/faults' && req.method === 'POST') {
      Object.assign(faults, JSON.parse(raw.toString('utf8') || '{}'));
      return sendJson(res, 200, faults);
    }
    if (path === '/admin/faults') return sendJson(res, 200, faults);
    if (path === '/admin/requests' && req.method === 'DELETE') {
      requests.length = 0;
      return sendJson(res, 200, { cleared: true });
    }
    if (path === '/admin/requests') return sendJson(res, 200, { requests });
    return sendJson(res, 404, { error: { message: `no admin route ${path}` } });
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    name,
    port,
    url: `http://127.0.0.1:${port}/v1`,
    faults,
    requests,
    received: () => seq,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** Tool arguments arrive in several deltas, as real servers stream them, so clients must reassemble them. */
function splitArgs(args: string): string[] {
  const n = Math.min(3, args.length) || 1;
  const size = Math.ceil(args.length / n);
  return Array.from({ length: n }, (_, i) => args.slice(i * size, (i + 1) * size)).filter(
    (p, i) => p.length > 0 || i === 0,
  );
}

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) }).end(text);
}
