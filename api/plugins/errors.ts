import type { FastifyError, FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import { PlatformError } from '../../common/errors';

interface ErrorBody {
  error: { type: string; message: string; details?: Record<string, unknown> };
}

const TYPE_BY_STATUS: Record<number, string> = {
  400: 'invalid_request',
  401: 'unauthorized',
  403: 'forbidden',
  404: 'not_found',
  405: 'method_not_allowed',
  409: 'conflict',
  413: 'payload_too_large',
  415: 'unsupported_media_type',
  422: 'unprocessable',
  429: 'rate_limited',
};

/** `body.resources.cpu` from AJV's `/resources/cpu` (plus the missing property for `required` errors). */
function fieldOf(err: FastifyError): string | undefined {
  const v = err.validation?.[0];
  if (!v) return undefined;
  const base = [err.validationContext, ...v.instancePath.split('/').filter(Boolean)];
  const missing = (v.params as { missingProperty?: string }).missingProperty;
  const extra = (v.params as { additionalProperty?: string }).additionalProperty;
  if (missing) base.push(missing);
  if (extra) base.push(extra);
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

/** One error shape for every route; 5xx internals are logged, never sent. */
export const errorsPlugin = fp(
  async (app: FastifyInstance) => {
    app.setErrorHandler((err, request, reply) => {
      const { status, body } = toErrorBody(err as FastifyError);
      if (status >= 500) request.log.error({ err }, 'request failed');
      else request.log.info({ status, type: body.error.type, message: body.error.message }, 'request rejected');
      return reply.status(status).send(body);
    });
    app.setNotFoundHandler((request, reply) =>
      reply
        .status(404)
        .send({ error: { type: 'not_found', message: `no route for ${request.method} ${request.url.split('?')[0]}` } }),
    );
  },
  { name: 'errors' },
);
