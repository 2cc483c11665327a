import { Type, type TSchema } from '@sinclair/typebox';
import { KEY_PATTERN } from '../contracts/operations';
import { cursorPattern, PAGE_LIMIT_DEFAULT, PAGE_LIMIT_MAX, type Keyset } from '../common/store/pages';

/** Schemas shared by several route folders. */
export const ErrorResponse = Type.Object(
  {
    error: Type.Object({
      type: Type.String(),
      message: Type.String(),
      details: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
    }),
  },
  { $id: 'Error', description: 'The one error shape of the platform' },
);

export const ResourceId = Type.String({
  pattern: '^[a-z0-9][a-z0-9._-]{0,62}$',
  description: 'lower-case letters, digits, . _ -',
});

/** A model version's name, as the registry, deployments, fine-tunes and conversions take it. */
export const VERSION_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$';
export const VersionId = Type.String({ pattern: VERSION_PATTERN });
/** The routes under a model version. */
export const VersionParams = Type.Object({ modelId: ResourceId, version: VersionId });

/** The 4xx answers every authenticated route can give, merged into each route's response schemas. */
export const errorResponses = (...codes: number[]): Record<number, TSchema> =>
  Object.fromEntries([401, 403, ...codes].map((c) => [c, Type.Ref('Error')]));

export const IdempotencyHeaders = Type.Object({
  'idempotency-key': Type.Optional(
    Type.String({
      pattern: KEY_PATTERN,
      description: 'Repeating a request with the same key returns the same operation',
    }),
  ),
});

/**
 * The paging parameters of a list (common/store/pages.ts): keyset pages, an opaque cursor whose documented pattern is
 * the list's own, so every cursor of that form is accepted and any other is refused by validation.
 */
export const pageParams = (keyset: Pick<Keyset<unknown>, 'list' | 'parts'>) => ({
  limit: Type.Integer({
    minimum: 1,
    maximum: PAGE_LIMIT_MAX,
    default: PAGE_LIMIT_DEFAULT,
    description: `Items per page (default ${PAGE_LIMIT_DEFAULT}, at most ${PAGE_LIMIT_MAX})`,
  }),
  cursor: Type.Optional(
    Type.String({
      pattern: cursorPattern(keyset),
      maxLength: 4096,
      description: "The previous page's nextCursor, as given (opaque: its form may change)",
    }),
  ),
});
export const pageQuerystring = (keyset: Pick<Keyset<unknown>, 'list' | 'parts'>) => Type.Object(pageParams(keyset));
export const NextCursor = Type.Union([Type.String(), Type.Null()], {
  description: 'Pass as cursor for the next page; null on the last page',
});
