import type { FastifyError } from 'fastify';
import { PlatformError } from '../../common/errors';
import { toErrorBody } from '../plugins/errors';

export class RateLimitedError extends PlatformError {
  constructor(
    message: string,
    readonly retryAfterSeconds: number,
    type = 'rate_limited',
  ) {
    super(429, type, message, { retryAfterSeconds });
  }
}

/** A tenant's or project's monthly budget is spent: 429 until the month ends or an admin raises the budget. */
export class BudgetExceededError extends RateLimitedError {
  constructor(message: string, retryAfterSeconds: number) {
    super(message, retryAfterSeconds, 'budget_exceeded');
  }
}

export class ModelNotFoundError extends PlatformError {
  constructor(model: string) {
    super(404, 'model_not_found', `The model '${model}' does not exist or has no route; see GET /v1/models`, {
      field: 'body.model',
    });
  }
}

/** OpenAI's error body: what the official clients read (`message`; `type`, `param`, `code` for programs). */
export interface OpenAiErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

const OPENAI_TYPE: Record<number, string> = {
  401: 'authentication_error',
  403: 'permission_error',
  404: 'invalid_request_error',
  429: 'rate_limit_error',
};

export function openAiError(
  status: number,
  message: string,
  code: string | null,
  param: string | null = null,
): OpenAiErrorBody {
  const type = OPENAI_TYPE[status] ?? (status >= 500 ? 'api_error' : 'invalid_request_error');
  return { error: { message, type, param, code } };
}

/** The platform's error mapping (status, message, field) rendered in OpenAI's shape; `code` is the platform type. */
export function toOpenAiError(err: FastifyError | Error): { status: number; body: OpenAiErrorBody } {
  const { status, body } = toErrorBody(err);
  const field = body.error.details?.field;
  const param = typeof field === 'string' ? field.replace(/^body\./, '') : null;
  return { status, body: openAiError(status, body.error.message, body.error.type, param) };
}

/** A version with nothing running did not come up within the gateway's bounded wait, or too many requests wait for it. */
export class ColdStartError extends PlatformError {
  constructor(
    message: string,
    readonly retryAfterSeconds: number,
  ) {
    super(503, 'model_starting', message, { retryAfterSeconds });
  }
}
