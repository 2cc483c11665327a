import type { FastifyInstance, FastifyRequest } from 'fastify';
import { BadRequestError } from '../../common/errors';

/**
 * PostgreSQL's text cannot hold NUL (the insert fails), and node-postgres silently turns an unpaired UTF-16 surrogate
 * into U+FFFD (the row then differs from what was sent). Either would surface as a 500 or as quietly changed data, so
 * control requests carrying one are refused up front, naming where it is.
 */
export function unstorableTextAt(value: unknown, at: string): string | undefined {
  if (typeof value === 'string') return value.includes('\0') || !value.isWellFormed() ? at : undefined;
  if (value === null || typeof value !== 'object') return undefined;
  // Only what a JSON or form parser builds: an uploaded file's Buffer is bytes for object storage, not text for the
  // database, and walking it would visit every byte.
  const proto = Object.getPrototypeOf(value);
  if (!Array.isArray(value) && proto !== Object.prototype && proto !== null) return undefined;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const found = unstorableTextAt(value[i], `${at}.${i}`);
      if (found) return found;
    }
    return undefined;
  }
  for (const [key, item] of Object.entries(value)) {
    const here = `${at}.${key}`;
    if (unstorableTextAt(key, here)) return here;
    const found = unstorableTextAt(item, here);
    if (found) return found;
  }
  return undefined;
}

/** A preValidation hook for a scope of control routes: every string of the body, query and path parameters. */
export function refuseUnstorableText(app: FastifyInstance): void {
  app.addHook('preValidation', async (request: FastifyRequest) => {
    // Named as Fastify names them in validation errors.
    for (const [part, value] of [
      ['params', request.params],
      ['querystring', request.query],
      ['body', request.body],
    ] as const) {
      const field = unstorableTextAt(value, part);
      if (field)
        throw new BadRequestError(
          `${field} holds a NUL character or an unpaired UTF-16 surrogate, which cannot be stored`,
          field,
        );
    }
  });
}
