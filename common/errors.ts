/**
 * Errors the API maps to 4xx. Each carries the platform error `type` and, for bad input,
 * the field it is about, so callers can see exactly what to fix.
 */
export class PlatformError extends Error {
  constructor(
    readonly statusCode: number,
    readonly type: string,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
    this.name = new.target.name;
  }
}

export class BadRequestError extends PlatformError {
  constructor(message: string, field?: string, details?: Record<string, unknown>) {
    super(400, 'invalid_request', message, { ...(field ? { field } : {}), ...details });
  }
}
export class PayloadTooLargeError extends PlatformError {
  constructor(message: string, field: string) {
    super(413, 'payload_too_large', message, { field });
  }
}
export class UnsupportedMediaTypeError extends PlatformError {
  constructor(message: string, field: string) {
    super(415, 'unsupported_media_type', message, { field });
  }
}
export class UnauthorizedError extends PlatformError {
  constructor(message = 'missing or invalid credentials') {
    super(401, 'unauthorized', message);
  }
}
export class ForbiddenError extends PlatformError {
  constructor(message: string, details?: Record<string, unknown>) {
    super(403, 'forbidden', message, details);
  }
}
export class NotFoundError extends PlatformError {
  constructor(what: string, id: string) {
    super(404, 'not_found', `${what} '${id}' not found`, { [what]: id });
  }
}
export class ConflictError extends PlatformError {
  constructor(message: string, details?: Record<string, unknown>) {
    super(409, 'conflict', message, details);
  }
}
export class IdempotencyMismatchError extends PlatformError {
  constructor(key: string) {
    super(422, 'idempotency_key_reused', `Idempotency-Key '${key}' was already used with a different request body`, {
      field: 'Idempotency-Key',
    });
  }
}
export class UnavailableError extends PlatformError {
  constructor(message: string) {
    super(503, 'unavailable', message);
  }
}
