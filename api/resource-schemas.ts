import { Type, type TSchema } from '@sinclair/typebox';
import { PlatformError } from '../common/errors';

/** Schemas and answers shared by the registry, admin, MCP and platform routes. */

/** A 204: the document shows no content for it. */
export const NoContent = Type.Null({ description: 'No content' });

/** One of a list of strings, typed as their union (a union of literals made with map() would type as never). */
export const StringEnum = <T extends string>(values: readonly T[], options: { description?: string } = {}) =>
  Type.Unsafe<T>({ type: 'string', enum: [...values], ...options });

export const Nullable = <T extends TSchema>(t: T) => Type.Union([t, Type.Null()]);

/** An object URI as common/objectstore.ts parses it: a malformed one fails the schema, naming the field. */
export const ObjectUri = Type.String({
  pattern: '^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/[^\\u0000]+$',
  maxLength: 2048,
  description: "s3://bucket/key, in the tenant's storage scope (its own bucket or one granted to it)",
});

/** A body refers to an object that does not exist: 404 naming the field that refers to it. */
export class MissingReferenceError extends PlatformError {
  constructor(message: string, field: string) {
    super(404, 'not_found', message, { field });
  }
}

export const BucketName = Type.String({
  pattern: '^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$',
  description: 'an S3 bucket name',
});
