import { operationOf } from './operations';

export interface RetryOptions {
  /** Further attempts after the first; default 3. */
  retries?: number;
  /** The first back-off; each next one doubles, up to maxDelayMs. */
  minDelayMs?: number;
  maxDelayMs?: number;
}

export type Transport = (request: Request) => Promise<Response>;

/** Answers that say "not now" rather than "no": another attempt may succeed. */
const RETRY_STATUSES = new Set([429, 502, 503, 504]);
const IDEMPOTENT_METHODS = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE']);

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function delayOf(response: Response | undefined, attempt: number, o: Required<RetryOptions>): number {
  const after = Number(response?.headers.get('retry-after'));
  if (Number.isFinite(after) && after > 0) return Math.min(after * 1000, o.maxDelayMs);
  return Math.min(o.minDelayMs * 2 ** attempt, o.maxDelayMs);
}

/**
 * Retries a call that cannot take effect twice: idempotent methods, and the operations that document an
 * `Idempotency-Key`. Those get a key before the first attempt (unless the caller gave one) and every attempt sends that
 * same key, so a start whose answer was lost is answered with the workflow the first attempt started. Other calls
 * (creating a key, uploading a file) are sent once.
 */
export function retrying(transport: Transport, baseUrl: string, options: RetryOptions = {}): Transport {
  const o: Required<RetryOptions> = { retries: 3, minDelayMs: 200, maxDelayMs: 5000, ...options };
  const basePath = new URL(baseUrl).pathname.replace(/\/$/, '');
  return async (request) => {
    const headers = new Headers(request.headers);
    const path = new URL(request.url).pathname.slice(basePath.length);
    const op = operationOf(request.method, path);
    if (op?.idempotencyKey && !headers.has('idempotency-key')) headers.set('idempotency-key', crypto.randomUUID());
    const retryable = IDEMPOTENT_METHODS.has(request.method) || headers.has('idempotency-key');
    const body = request.body ? await request.arrayBuffer() : undefined;
    for (let attempt = 0; ; attempt++) {
      const last = !retryable || attempt >= o.retries;
      let response: Response;
      try {
        response = await transport(
          new Request(request.url, { method: request.method, headers, body, signal: request.signal }),
        );
      } catch (err) {
        if (last || request.signal.aborted) throw err;
        await sleep(delayOf(undefined, attempt, o));
        continue;
      }
      if (last || !RETRY_STATUSES.has(response.status)) return response;
      await response.body?.cancel();
      await sleep(delayOf(response, attempt, o));
    }
  };
}
