import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import {
  context,
  propagation,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  trace,
  type Attributes,
  type Context,
  type Span,
} from '@opentelemetry/api';
import {
  ATTR_HTTP_REQUEST_METHOD,
  ATTR_HTTP_RESPONSE_STATUS_CODE,
  ATTR_HTTP_ROUTE,
  ATTR_URL_PATH,
} from '@opentelemetry/semantic-conventions';
import fp from 'fastify-plugin';

/**
 * Server spans for every request, made with the @opentelemetry/api alone: they are no-ops until common/tracing.ts
 * registers a tracer provider (OTEL_EXPORTER_OTLP_ENDPOINT), so an untraced process pays nothing of note.
 */
const tracer = trace.getTracer('llmhub');
const REQUEST_ID = /^[\w.:-]{1,128}$/;
/** Probes and scrapes, every few seconds from every kubelet and Prometheus: spans of them would bury the requests. */
const UNTRACED = /^\/(healthz|readyz|metrics)(\?|$)/;
/** Each request's span, in the context its handler runs in (kept by the raw request, which Fastify builds the id from). */
const requestContexts = new WeakMap<IncomingMessage, { span: Span; context: Context }>();

/**
 * Fastify's genReqId. A caller's X-Trace-ID (or X-Request-ID) stays the request id, so one id follows a call through
 * logs, audit and upstreams; without one, a traced request's id is its trace id (continuing a caller's
 * `traceparent`), so the X-Trace-ID answered is the id to look the trace up by. The span starts here because the id
 * must exist before the request's logger does.
 */
export function requestIdOf(req: IncomingMessage): string {
  const given = req.headers['x-trace-id'] ?? req.headers['x-request-id'];
  const callerId = typeof given === 'string' && REQUEST_ID.test(given) ? given : undefined;
  if (UNTRACED.test(req.url ?? '')) return callerId ?? randomUUID();
  const parent = propagation.extract(ROOT_CONTEXT, req.headers);
  const span = tracer.startSpan(req.method ?? 'HTTP', { kind: SpanKind.SERVER }, parent);
  // Attributes only for a span that records: most requests are not sampled, and this runs on every one.
  if (!span.isRecording()) return callerId ?? randomUUID();
  span.setAttributes({ [ATTR_HTTP_REQUEST_METHOD]: req.method, [ATTR_URL_PATH]: req.url?.split('?')[0] });
  requestContexts.set(req, { span, context: trace.setSpan(parent, span) });
  if (callerId) span.setAttribute('llmhub.request_id', callerId);
  return callerId ?? span.spanContext().traceId;
}

export const tracingPlugin = fp(
  async (app) => {
    app.addHook('onRequest', (request, reply, done) => {
      const traced = requestContexts.get(request.raw);
      if (!traced) return done();
      const route = request.routeOptions.url;
      if (route) {
        traced.span.updateName(`${request.method} ${route}`);
        traced.span.setAttribute(ATTR_HTTP_ROUTE, route);
      }
      // 'close' also comes for answers written past Fastify (the gateway's hijacked streams) and for callers gone.
      let ended = false;
      const end = () => {
        if (ended) return;
        ended = true;
        const status = reply.raw.statusCode;
        traced.span.setAttribute(ATTR_HTTP_RESPONSE_STATUS_CODE, status);
        if (status >= 500) traced.span.setStatus({ code: SpanStatusCode.ERROR });
        traced.span.end();
      };
      reply.raw.once('finish', end);
      reply.raw.once('close', end);
      done();
    });
    app.addHook('onError', (request, _reply, error, done) => {
      requestContexts.get(request.raw)?.span.recordException(error);
      done();
    });
    // The body is read on the socket's events, outside any context, so the span becomes active only here, right
    // before the handler: what it starts (a workflow, an upstream call) is the span's child.
    app.addHook('preHandler', (request, _reply, done) => {
      const traced = requestContexts.get(request.raw);
      if (traced) context.with(traced.context, done);
      else done();
    });
  },
  { name: 'llmhub-tracing' },
);

/**
 * Runs `fn` in a client span for a call to another service, with `headers` extended by the span's W3C trace
 * context (`traceparent`), so the callee's spans join the trace. `attributes` are built only for a span that records,
 * and an unrecorded call is `fn` itself, no wrapper: the gateway makes one such call per request.
 */
export function withClientSpan<T>(
  name: string,
  attributes: () => Attributes,
  headers: Record<string, string>,
  fn: (headers: Record<string, string>) => Promise<T>,
): Promise<T> {
  const span = tracer.startSpan(name, { kind: SpanKind.CLIENT });
  if (!span.isRecording()) return fn(headers);
  span.setAttributes(attributes());
  return recorded(span, headers, fn);
}

async function recorded<T>(
  span: Span,
  headers: Record<string, string>,
  fn: (headers: Record<string, string>) => Promise<T>,
): Promise<T> {
  const traced = { ...headers };
  propagation.inject(trace.setSpan(context.active(), span), traced);
  try {
    return await fn(traced);
  } catch (err) {
    span.recordException(err as Error);
    span.setStatus({ code: SpanStatusCode.ERROR });
    throw err;
  } finally {
    span.end();
  }
}

/** `headers` with the active span's W3C trace context added (none when untraced). */
export function withTraceContext(headers: Record<string, string>): Record<string, string> {
  propagation.inject(context.active(), headers);
  return headers;
}
