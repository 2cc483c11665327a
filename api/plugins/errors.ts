import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import { Type } from '@sinclair/typebox';
import type {
  ConnectionError,
  FastifyError,
  FastifyInstance,
  FastifyReply,
  FastifyRequest,
  FastifySchema,
  RouteOptions,
} from 'fastify';
import fp from 'fastify-plugin';
import type { HTTPMethod } from 'find-my-way';
import { BadRequestError, PlatformError, UnavailableError } from '../../common/errors';
import { AllowedMethods } from './allowed-methods';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Writes this route's errors where they are not in the platform's shape (the gateway answers in OpenAI's). */
    renderError?: ErrorRenderer;
  }
}

export type ErrorRenderer = (err: Error) => { status: number; body: unknown };

interface ErrorBody {
  error: { type: string; message: string; details?: Record<string, unknown> };
}

const TYPE_BY_STATUS: Record<number, string> = {
  400: 'invalid_request',
  401: 'unauthorized',
  403: 'forbidden',
  404: 'not_found',
  405: 'method_not_allowed',
  408: 'request_timeout',
  409: 'conflict',
  413: 'payload_too_large',
  414: 'uri_too_long',
  415: 'unsupported_media_type',
  422: 'unprocessable',
  429: 'rate_limited',
  431: 'headers_too_large',
};

/**
 * The longest path parameter the router takes; a longer one is 414, answered before authentication. Far above what any
 * route's parameter schema allows (maxLength, checked after authentication with 400), even percent-encoded.
 */
export const MAX_PARAM_LENGTH = 1024;

export class MethodNotAllowedError extends PlatformError {
  constructor(method: string, path: string, allow: string[]) {
    super(405, 'method_not_allowed', `${method} is not allowed on ${path}; it answers ${allow.join(', ')}`, { allow });
  }
}

/** `body.resources.cpu` from AJV's `/resources/cpu` (plus the missing property for `required` errors). */
function fieldOf(err: FastifyError): string | undefined {
  const v = err.validation?.[0];
  if (!v) return undefined;
  const base = [err.validationContext, ...v.instancePath.split('/').filter(Boolean)];
  const missing = (v.params as { missingProperty?: string }).missingProperty;
  const extra = (v.params as { additionalProperty?: string }).additionalProperty;
  // A key refused by `propertyNames` (an env or pod-metadata name) is named itself, like a value.
  const key = (v as { propertyName?: string }).propertyName ?? (v.params as { propertyName?: string }).propertyName;
  if (missing) base.push(missing);
  if (extra) base.push(extra);
  if (key) base.push(key);
  return base.filter(Boolean).join('.');
}

export function toErrorBody(err: FastifyError | PlatformError | Error): { status: number; body: ErrorBody } {
  if (err instanceof PlatformError) {
    return {
      status: err.statusCode,
      body: { error: { type: err.type, message: err.message, ...(err.details ? { details: err.details } : {}) } },
    };
  }
  const fe = err as FastifyError;
  if (fe.validation) {
    const field = fieldOf(fe);
    const v = fe.validation[0];
    const message = field ? `${field}: ${v?.message ?? 'is invalid'}` : fe.message;
    return {
      status: 400,
      body: { error: { type: 'invalid_request', message, details: { field, issues: fe.validation } } },
    };
  }
  const status = fe.statusCode ?? 500;
  if (status >= 400 && status < 500) {
    return { status, body: { error: { type: TYPE_BY_STATUS[status] ?? 'invalid_request', message: fe.message } } };
  }
  return {
    status: 500,
    body: { error: { type: 'internal_error', message: 'internal error; see the server log for the request id' } },
  };
}

/**
 * Errors Fastify's router answers before any route or hook runs (Fastify's option `frameworkErrors`): a path that is
 * not valid percent-encoding, a path parameter over MAX_PARAM_LENGTH. In the platform's shape, like every other error.
 */
export function frameworkErrors(err: FastifyError, request: FastifyRequest, reply: FastifyReply): void {
  const known: Record<string, PlatformError> = {
    FST_ERR_BAD_URL: new BadRequestError(
      'the URL path is not valid: a % must start an escape of two hex digits that decodes to UTF-8',
      'path',
    ),
    FST_ERR_MAX_PARAM_LENGTH: new PlatformError(
      414,
      'uri_too_long',
      `a path parameter is longer than ${MAX_PARAM_LENGTH} characters`,
      { field: 'path' },
    ),
  };
  const { status, body } = toErrorBody(known[err.code] ?? err);
  request.log.info({ status, code: err.code }, 'request rejected by the router');
  void reply.status(status).send(body);
}

/**
 * What Node's HTTP parser refuses before Fastify sees a request (Fastify's option `clientErrorHandler`): a malformed
 * request (400), headers over Node's limit (431), a request not received in time (408). Written on the socket, which
 * is then closed, as Node and Fastify do, but in the platform's shape.
 */
export function clientErrorHandler(err: ConnectionError, socket: Socket): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  const [status, message] =
    err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
      ? [408, 'the request was not received in time']
      : err.code === 'HPE_HEADER_OVERFLOW'
        ? [431, 'the request headers are larger than the server accepts']
        : [400, 'the request is not valid HTTP'];
  const body = JSON.stringify({ error: { type: TYPE_BY_STATUS[status], message } });
  if (socket.writable) {
    socket.write(
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json\r\n` +
        `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  }
  socket.destroy(err);
}

/**
 * The errors every route of a kind can give whatever its handler does, added to the OpenAPI document where a route
 * documents its errors (routes with their own error shape, the gateway's, list theirs): the failed-authentication
 * budget's 429 on every route that needs credentials, 400/413/415 from body parsing, 414 on a path parameter, 431
 * from Node's limit on headers.
 */
function documentFrameworkErrors(route: RouteOptions): void {
  const response = route.schema?.response as Record<string, unknown> | undefined;
  if (!response || route.config?.renderError) return;
  const codes = [
    431,
    ...(route.config?.public ? [] : [429]),
    ...(route.schema?.body ? [400, 413, 415] : []),
    ...(route.url.includes(':') ? [414] : []),
  ];
  route.schema = {
    ...route.schema,
    response: { ...Object.fromEntries(codes.map((c) => [c, Type.Ref('Error')])), ...response },
  } as FastifySchema;
}

/**
 * A query parameter a route does not define is refused (400 naming it) rather than ignored, so a misspelt filter never
 * silently widens a list, and the document's `additionalProperties: false` is what the route does.
 */
function closeQuerystring(route: RouteOptions): void {
  const query = route.schema?.querystring as Record<string, unknown> | undefined;
  if (!query || query.type !== 'object' || 'additionalProperties' in query) return;
  route.schema = { ...route.schema, querystring: { ...query, additionalProperties: false } } as FastifySchema;
}

/**
 * Fastify's options that hand its own answers to this module: the router's errors, Node's parser's errors, and the
 * 503 while closing (answered by errorsPlugin's hook instead).
 */
export const frameworkErrorOptions = {
  frameworkErrors,
  clientErrorHandler,
  return503OnClosing: false,
  routerOptions: { maxParamLength: MAX_PARAM_LENGTH },
};

/**
 * One error shape for every route; 5xx internals are logged, never sent. Registered before any route: it sees every
 * route's methods, so a path asked with a method it has no route for is 405 with `Allow`, not 404.
 */
export const errorsPlugin = fp(
  async (app: FastifyInstance) => {
    const allowed = new AllowedMethods<ErrorRenderer | undefined>();
    app.addHook('onRoute', (route) => {
      documentFrameworkErrors(route);
      closeQuerystring(route);
      for (const method of [route.method].flat())
        allowed.add(method.toUpperCase() as HTTPMethod, route.url, route.config?.renderError);
    });

    // Fastify's own 503 while closing has Fastify's shape (option return503OnClosing: false hands it to this hook).
    let closing = false;
    app.addHook('preClose', (done) => {
      closing = true;
      done();
    });
    // Callback-style hooks, not async: they run on every request (the gateway's inference calls too), and an async
    // hook costs a promise and its continuation per call.
    app.addHook('onRequest', (_request, reply, done) => {
      if (!closing) return done();
      reply.header('connection', 'close');
      done(new UnavailableError('the API is shutting down; send the request again'));
    });

    /** No route for this method and path: 405 with `Allow` when the path has routes for other methods, else 404. */
    const noRoute = (request: FastifyRequest, reply: FastifyReply) => {
      const path = request.url.split('?')[0]!;
      const other = allowed.of(path, (method, url) => app.findRoute({ method, url }));
      if (!other)
        return reply
          .status(404)
          .send({ error: { type: 'not_found', message: `no route for ${request.method} ${path}` } });
      const render = other.store ?? toErrorBody;
      const { status, body } = render(new MethodNotAllowedError(request.method, path, other.methods));
      return reply.status(status).header('allow', other.methods.join(', ')).send(body);
    };

    app.setErrorHandler((err, request, reply) => {
      // Fastify checks a body method's Content-Type (QUERY's too) before its not-found handler runs; credentials are
      // still checked first (the auth hook's 401 stays a 401).
      const code = (err as FastifyError).code ?? '';
      if (request.is404 && /^FST_ERR_(CTP_|ROUTE_MISSING_CONTENT)/.test(code)) return noRoute(request, reply);
      const { status, body } = toErrorBody(err as FastifyError);
      if (status >= 500) request.log.error({ err }, 'request failed');
      else request.log.info({ status, type: body.error.type, message: body.error.message }, 'request rejected');
      return reply.status(status).send(body);
    });
    app.setNotFoundHandler(noRoute);
    // The router matches `/v1/knowledge/` to `/v1/knowledge/:namespace` with an empty namespace; the document (and
    // this API) has no such path. After authentication, as for every route.
    app.addHook('preValidation', (request, reply, done) => {
      const params = request.params as Record<string, unknown> | undefined;
      if (params && Object.values(params).some((v) => v === '')) void noRoute(request, reply);
      else done();
    });
  },
  { name: 'errors' },
);
