/**
 * Headers on every answer, also those written past Fastify (inference answers and streams): a browser must not guess
 * another type than the one sent (a file's content, a model server's answer), as security scanners check.
 */
export const ALWAYS_HEADERS = { 'x-content-type-options': 'nosniff' } as const;
