import type { IncomingHttpHeaders } from 'node:http';
import { Agent, errors as undiciErrors, type Dispatcher } from 'undici';
import type { Upstream } from './route-table';

export type FailureClass = 'connect' | 'timeout_connect' | 'timeout_first_byte' | 'timeout_idle' | 'upstream_5xx' | 'circuit_open' | 'stream_broken';

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
  if (err instanceof undiciErrors.ConnectTimeoutError) return new UpstreamError('timeout_connect', 'connecting to the model server timed out');
  if (err instanceof undiciErrors.HeadersTimeoutError) return new UpstreamError('timeout_first_byte', 'the model server did not answer in time (first byte)');
  if (err instanceof undiciErrors.BodyTimeoutError) return new UpstreamError('timeout_idle', 'the model server went silent mid-response (idle timeout)');
  const code = (err as { code?: string }).code ?? 'error';
  if (phase === 'body') return new UpstreamError('stream_broken', `the model server closed the connection mid-response (${code})`);
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
  statusCode: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/**
 * Stops an upstream call when its caller has gone. Not an AbortSignal listener per call: with one on every
 * request's signal, about 9 % of what a request allocated (some 4 MB per young-generation collection at
 * 2,000-5,000 requests/s) survived two scavenges and was promoted, each scavenge then paused the process for
 * 7-25 ms, and those pauses were the gateway's p99 (measured with --trace-gc-nvp; without the listener,
 * ~0.1 MB survived and pauses were ~1 ms). So a whole answer registers a plain callback, and an AbortSignal is
 * made only for the streaming path, whose undici API takes one.
 */
export class Cancellation {
  private reason: Error | undefined;
  private hook: ((reason: Error) => void) | undefined;
  private controller: AbortController | undefined;

  get cancelled(): boolean {
    return this.reason !== undefined;
  }

  cancel(reason: Error = new Error('the caller closed the connection')): void {
    if (this.reason) return;
    this.reason = reason;
    this.hook?.(reason);
    this.controller?.abort(reason);
  }

  /** The one call in progress to stop on cancel (undefined when it has ended); runs at once if already cancelled. */
  onCancel(hook: ((reason: Error) => void) | undefined): void {
    this.hook = hook;
    if (hook && this.reason) hook(this.reason);
  }

  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      if (this.reason) this.controller.abort(this.reason);
    }
    return this.controller.signal;
  }
}

/**
 * Collects a whole answer straight from undici's dispatcher: `request` would build a body stream and an abort
 * listener per call for what is read in one piece anyway, a measurable share of a request's CPU.
 */
class WholeAnswer implements Dispatcher.DispatchHandler {
  private controller?: Dispatcher.DispatchController;
  private statusCode = 0;
  private headers: IncomingHttpHeaders = {};
  private readonly chunks: Buffer[] = [];

  constructor(
    private readonly cancellation: Cancellation,
    private readonly resolve: (res: WholeResponse) => void,
    /** `body`: the headers had arrived. */
    private readonly reject: (err: Error, phase: 'request' | 'body') => void,
  ) {}

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    this.cancellation.onCancel((reason) => controller.abort(reason));
  }

  onResponseStart(_c: Dispatcher.DispatchController, statusCode: number, headers: IncomingHttpHeaders): void {
    this.statusCode = statusCode;
    this.headers = headers;
  }

  onResponseData(_c: Dispatcher.DispatchController, chunk: Buffer): void {
    this.chunks.push(chunk);
  }

  onResponseEnd(): void {
    this.cancellation.onCancel(undefined);
    this.resolve({ statusCode: this.statusCode, headers: this.headers, body: Buffer.concat(this.chunks) });
  }

  onResponseError(_c: Dispatcher.DispatchController, err: Error): void {
    this.cancellation.onCancel(undefined);
    // A server error whose body broke off is still a server error.
    if (this.statusCode >= 500 && !this.cancellation.cancelled) this.onResponseEnd();
    else this.reject(err, this.statusCode ? 'body' : 'request');
  }
}

/** Pooled keep-alive connections to every model server (undici's dispatcher, about twice node:http's throughput). */
export class UpstreamPool {
  private readonly agent: Agent;
  private readonly breakers = new Map<string, CircuitBreaker>();

  constructor(private readonly s: UpstreamSettings) {
    this.agent = new Agent({
      connections: s.connections,
      keepAliveTimeout: 30_000,
      connect: { timeout: s.connectTimeoutMs },
    });
  }

  breaker(u: Upstream): CircuitBreaker {
    let b = this.breakers.get(u.origin);
    if (!b) this.breakers.set(u.origin, (b = new CircuitBreaker({ failures: this.s.breakerFailures, cooldownMs: this.s.breakerCooldownMs })));
    return b;
  }

  private usable(u: Upstream): CircuitBreaker {
    if (!u.url) throw new UpstreamError('connect', `version '${u.version}' has no endpoint`);
    const breaker = this.breaker(u);
    if (!breaker.allow()) throw new UpstreamError('circuit_open', `the model server of version '${u.version}' is failing; requests are paused (circuit open)`);
    return breaker;
  }

  /**
   * Sends the request and reads the whole answer. 5xx answers and transport failures (before or after the
   * headers) reject with an UpstreamError and count against the upstream's breaker; 2xx-4xx resolve.
   */
  async sendWhole(u: Upstream, path: string, headers: Record<string, string>, body: Buffer, cancellation: Cancellation): Promise<WholeResponse> {
    const breaker = this.usable(u);
    let res: WholeResponse;
    try {
      res = await new Promise<WholeResponse>((resolve, reject) => {
        const answer = new WholeAnswer(cancellation, resolve, (err, phase) => reject(cancellation.cancelled ? err : classify(err, phase)));
        this.agent.dispatch(
          { origin: u.origin, path: `${u.basePath}${path}`, method: 'POST', headers, body, headersTimeout: this.s.firstByteTimeoutMs, bodyTimeout: this.s.idleTimeoutMs },
          answer,
        );
      });
    } catch (err) {
      if (cancellation.cancelled) throw err;
      breaker.failure();
      throw classify(err);
    }
    if (res.statusCode >= 500) {
      breaker.failure();
      throw new UpstreamError('upstream_5xx', `the model server answered ${res.statusCode}`, res.statusCode, res.body);
    }
    breaker.success();
    return res;
  }

  /**
   * Sends the request; resolves at the response headers, for answers read as a stream. 5xx answers and transport
   * failures reject with an UpstreamError and count against the upstream's breaker; 2xx-4xx resolve (a 4xx is the caller's fault).
   */
  async send(u: Upstream, path: string, headers: Record<string, string>, body: Buffer, signal: AbortSignal): Promise<Dispatcher.ResponseData> {
    const breaker = this.usable(u);
    let res: Dispatcher.ResponseData;
    try {
      res = await this.agent.request({
        origin: u.origin,
        path: `${u.basePath}${path}`,
        method: 'POST',
        headers,
        body,
        signal,
        headersTimeout: this.s.firstByteTimeoutMs,
        bodyTimeout: this.s.idleTimeoutMs,
      });
    } catch (err) {
      if (signal.aborted) throw err;
      breaker.failure();
      throw classify(err);
    }
    if (res.statusCode >= 500) {
      const text = Buffer.from(await res.body.arrayBuffer().catch(() => new ArrayBuffer(0)));
      breaker.failure();
      throw new UpstreamError('upstream_5xx', `the model server answered ${res.statusCode}`, res.statusCode, text);
    }
    breaker.success();
    return res;
  }

  close(): Promise<void> {
    return this.agent.close();
  }
}
