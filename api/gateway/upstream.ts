import type { IncomingHttpHeaders } from 'node:http';
import { Agent, errors as undiciErrors, type Dispatcher } from 'undici';
import { egressRefusalIn } from '../../common/egress';
import type { Upstream } from './route-table';

export type FailureClass =
  | 'connect'
  | 'timeout_connect'
  | 'timeout_first_byte'
  | 'timeout_idle'
  | 'upstream_5xx'
  | 'circuit_open'
  | 'stream_broken';

/** A failure of the upstream (not of the caller), classified for metrics, fallback and the error answer. */
export class UpstreamError extends Error {
  constructor(
    readonly failure: FailureClass,
    message: string,
    readonly status?: number,
    readonly body?: Buffer,
  ) {
    super(message);
  }
}

/** `body`: the failure came after the response headers, so a dropped socket is a broken stream, not an unreachable server. */
export function classify(err: unknown, phase: 'request' | 'body' = 'request'): UpstreamError {
  if (err instanceof UpstreamError) return err;
  const refused = egressRefusalIn(err);
  if (refused) return new UpstreamError('connect', refused.message);
  if (err instanceof undiciErrors.ConnectTimeoutError)
    return new UpstreamError('timeout_connect', 'connecting to the model server timed out');
  if (err instanceof undiciErrors.HeadersTimeoutError)
    return new UpstreamError('timeout_first_byte', 'the model server did not answer in time (first byte)');
  if (err instanceof undiciErrors.BodyTimeoutError)
    return new UpstreamError('timeout_idle', 'the model server went silent mid-response (idle timeout)');
  const code = (err as { code?: string }).code ?? 'error';
  if (phase === 'body')
    return new UpstreamError('stream_broken', `the model server closed the connection mid-response (${code})`);
  if (['ECONNREFUSED', 'ENOTFOUND', 'EHOSTUNREACH', 'ECONNRESET', 'UND_ERR_SOCKET'].includes(code)) {
    return new UpstreamError('connect', `the model server is unreachable (${code})`);
  }
  return new UpstreamError('stream_broken', `the model server connection failed: ${(err as Error).message}`);
}

/**
 * Per-upstream circuit breaker: after `failures` consecutive failures it opens and the gateway stops sending
 * there; after `cooldownMs` one request is let through as a probe: success closes it, failure re-opens it.
 */
export class CircuitBreaker {
  private consecutive = 0;
  private openedAt: number | null = null;
  private probing = false;

  constructor(private readonly opts: { failures: number; cooldownMs: number }) {}

  get state(): 'closed' | 'open' | 'half_open' {
    if (this.openedAt === null) return 'closed';
    return this.probing ? 'half_open' : 'open';
  }

  allow(now = Date.now()): boolean {
    if (this.openedAt === null) return true;
    if (this.probing || now - this.openedAt < this.opts.cooldownMs) return false;
    this.probing = true;
    return true;
  }

  success(): void {
    this.consecutive = 0;
    this.openedAt = null;
    this.probing = false;
  }

  failure(now = Date.now()): void {
    this.consecutive++;
    if (this.probing || this.consecutive >= this.opts.failures) {
      this.openedAt = now;
      this.probing = false;
    }
  }
}

export interface UpstreamSettings {
  connections: number;
  connectTimeoutMs: number;
  firstByteTimeoutMs: number;
  idleTimeoutMs: number;
  breakerFailures: number;
  breakerCooldownMs: number;
}

/** A whole (not streamed) answer. */
export interface WholeResponse {
  kind: 'whole';
  statusCode: number;
  headers: IncomingHttpHeaders;
  contentType: string | undefined;
  body: Buffer;
}

/** An SSE answer whose first chunk has arrived: `relay` hands on the rest. */
export interface StreamResponse {
  kind: 'stream';
  statusCode: 200;
  headers: IncomingHttpHeaders;
  relay: StreamRelay;
}

/**
 * Stops an upstream call when its caller has gone. Not an AbortSignal listener per call: with one on every
 * request's signal, about 9 % of what a request allocated (some 4 MB per young-generation collection at
 * 2,000-5,000 requests/s) survived two scavenges and was promoted, each scavenge then paused the process for
 * 7-25 ms, and those pauses were the gateway's p99 (measured with --trace-gc-nvp; without the listener,
 * ~0.1 MB survived and pauses were ~1 ms). So the call in progress registers a plain callback.
 */
export class Cancellation {
  private reason: Error | undefined;
  private hook: ((reason: Error) => void) | undefined;

  get cancelled(): boolean {
    return this.reason !== undefined;
  }

  cancel(reason: Error = new Error('the caller closed the connection')): void {
    if (this.reason) return;
    this.reason = reason;
    this.hook?.(reason);
  }

  /** The one call in progress to stop on cancel (undefined when it has ended); runs at once if already cancelled. */
  onCancel(hook: ((reason: Error) => void) | undefined): void {
    this.hook = hook;
    if (hook && this.reason) hook(this.reason);
  }
}

/**
 * Hands a streamed answer's chunks on as undici parses them, with no body stream or async iterator in between:
 * those cost a few allocations per chunk and kept several KB per open stream alive long enough to be promoted,
 * so 1,000 streams grew the old generation round after round. Backpressure pauses the upstream socket.
 */
export class StreamRelay {
  private pending: Buffer[] = [];
  private sink: ((chunk: Buffer) => boolean) | undefined;
  private ended = false;
  private error: Error | undefined;
  private settle: { resolve: () => void; reject: (err: Error) => void } | undefined;

  constructor(private readonly controller: Dispatcher.DispatchController) {}

  /**
   * Sends every chunk, those that came before this call first, to `write` until the upstream ends (resolves) or
   * fails (rejects). `write` returning false pauses the upstream until `resume()`.
   */
  forward(write: (chunk: Buffer) => boolean): Promise<void> {
    return new Promise((resolve, reject) => {
      for (const chunk of this.pending) this.push(chunk, write);
      this.pending = [];
      if (this.error) reject(this.error);
      else if (this.ended) resolve();
      else {
        this.sink = write;
        this.settle = { resolve, reject };
      }
    });
  }

  /** The client can take more. */
  resume(): void {
    this.controller.resume();
  }

  /** @internal from the dispatch handler */
  data(chunk: Buffer): void {
    if (this.sink) this.push(chunk, this.sink);
    else this.pending.push(chunk);
  }

  /** @internal */
  end(): void {
    this.ended = true;
    this.settle?.resolve();
  }

  /** @internal */
  fail(err: Error): void {
    this.error = err;
    this.settle?.reject(err);
  }

  private push(chunk: Buffer, write: (chunk: Buffer) => boolean): void {
    if (!write(chunk)) this.controller.pause();
  }
}

/**
 * Reads an upstream answer straight from undici's dispatcher: a whole body, or (when a stream was asked for and
 * the model server answered 200 with SSE) a StreamRelay resolved at the first chunk, so a failure before any byte
 * reached the caller can still fall back. `request` would build a body stream and an abort listener per call.
 */
class UpstreamAnswer implements Dispatcher.DispatchHandler {
  private statusCode = 0;
  private headers: IncomingHttpHeaders = {};
  private readonly chunks: Buffer[] = [];
  private relay: StreamRelay | undefined;
  private settled = false;

  constructor(
    private readonly cancellation: Cancellation,
    private readonly stream: boolean,
    private readonly resolve: (res: WholeResponse | StreamResponse) => void,
    /** `body`: the headers had arrived. */
    private readonly reject: (err: Error, phase: 'request' | 'body') => void,
  ) {}

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.cancellation.onCancel((reason) => controller.abort(reason));
  }

  onResponseStart(controller: Dispatcher.DispatchController, statusCode: number, headers: IncomingHttpHeaders): void {
    this.statusCode = statusCode;
    this.headers = headers;
    if (this.stream && statusCode === 200 && headerOf(headers, 'content-type')?.startsWith('text/event-stream')) {
      this.relay = new StreamRelay(controller);
    }
  }

  onResponseData(_c: Dispatcher.DispatchController, chunk: Buffer): void {
    if (!this.relay) {
      this.chunks.push(chunk);
      return;
    }
    this.relay.data(chunk);
    this.started();
  }

  onResponseEnd(): void {
    this.cancellation.onCancel(undefined);
    if (this.relay) {
      this.relay.end();
      this.started();
      return;
    }
    this.settled = true;
    this.resolve({
      kind: 'whole',
      statusCode: this.statusCode,
      headers: this.headers,
      contentType: headerOf(this.headers, 'content-type'),
      body: Buffer.concat(this.chunks),
    });
  }

  onResponseError(_c: Dispatcher.DispatchController, err: Error): void {
    this.cancellation.onCancel(undefined);
    if (this.settled) {
      this.relay?.fail(err);
      return;
    }
    // A server error whose body broke off is still a server error.
    if (this.statusCode >= 500 && !this.cancellation.cancelled) this.onResponseEnd();
    else this.reject(err, this.statusCode ? 'body' : 'request');
  }

  /** The stream has its first chunk (or ended without one): the caller can be answered. */
  private started(): void {
    if (this.settled) return;
    this.settled = true;
    this.resolve({ kind: 'stream', statusCode: 200, headers: this.headers, relay: this.relay! });
  }
}

/** Pooled keep-alive connections to every model server (undici's dispatcher, about twice node:http's throughput). */
export class UpstreamPool {
  private readonly agent: Agent;
  private readonly breakers = new Map<string, CircuitBreaker>();

  /** `external`: the dispatcher of calls to external providers (the egress check's, common/egress.ts). */
  constructor(
    private readonly s: UpstreamSettings,
    private readonly external?: Dispatcher,
  ) {
    this.agent = new Agent({
      connections: s.connections,
      keepAliveTimeout: 30_000,
      connect: { timeout: s.connectTimeoutMs },
    });
  }

  breaker(u: Upstream): CircuitBreaker {
    let b = this.breakers.get(u.breakerKey);
    if (!b)
      this.breakers.set(
        u.breakerKey,
        (b = new CircuitBreaker({ failures: this.s.breakerFailures, cooldownMs: this.s.breakerCooldownMs })),
      );
    return b;
  }

  private usable(u: Upstream): CircuitBreaker {
    if (!u.url) throw new UpstreamError('connect', `version '${u.version}' has no endpoint`);
    const breaker = this.breaker(u);
    if (!breaker.allow())
      throw new UpstreamError(
        'circuit_open',
        `the model server of version '${u.version}' is failing; requests are paused (circuit open)`,
      );
    return breaker;
  }

  /**
   * Sends the request; resolves with the whole answer, or with a relay at the first chunk when `stream` is asked
   * for and the answer is SSE. 5xx answers and transport failures before that point reject with an UpstreamError
   * and count against the upstream's breaker; 2xx-4xx resolve (a 4xx is the caller's fault). A stream that breaks
   * later rejects its relay's `forward`. Settled from the dispatch handler's callbacks, not awaited: an async
   * function here was one more generator and promise per request.
   */
  call(
    u: Upstream,
    path: string,
    headers: Record<string, string>,
    body: Buffer,
    cancellation: Cancellation,
    stream: boolean,
  ): Promise<WholeResponse | StreamResponse> {
    return new Promise((resolve, reject) => {
      const breaker = this.usable(u);
      const failed = (err: unknown, phase: 'request' | 'body' = 'request') => {
        if (cancellation.cancelled) return reject(err);
        breaker.failure();
        reject(classify(err, phase));
      };
      const answer = new UpstreamAnswer(
        cancellation,
        stream,
        (res) => {
          if (res.statusCode < 500) {
            breaker.success();
            return resolve(res);
          }
          breaker.failure();
          reject(
            new UpstreamError(
              'upstream_5xx',
              `the model server answered ${res.statusCode}`,
              res.statusCode,
              res.kind === 'whole' ? res.body : undefined,
            ),
          );
        },
        failed,
      );
      try {
        if (u.provider && !this.external) throw new UpstreamError('connect', 'external providers are not enabled');
        (u.provider ? this.external! : this.agent).dispatch(
          {
            origin: u.origin,
            path: `${u.basePath}${path}${u.provider?.query ?? ''}`,
            method: 'POST',
            headers,
            body,
            headersTimeout: this.s.firstByteTimeoutMs,
            bodyTimeout: this.s.idleTimeoutMs,
          },
          answer,
        );
      } catch (err) {
        failed(err);
      }
    });
  }

  close(): Promise<void> {
    return this.agent.close();
  }
}

export const headerOf = (headers: IncomingHttpHeaders, name: string): string | undefined => {
  const v = headers[name];
  return Array.isArray(v) ? v[0] : v;
};
