import { readFileSync } from 'node:fs';
import path from 'node:path';

export type Schema = Record<string, unknown>;

export interface OperationObject {
  parameters?: { in: 'path' | 'query' | 'header'; name: string; required?: boolean; schema: Schema }[];
  requestBody?: { required?: boolean; content: Record<string, { schema: Schema }> };
  responses: Record<string, { content?: Record<string, { schema: Schema }> }>;
}

export interface OpenApiDocument {
  paths: Record<string, Record<string, OperationObject>>;
  components?: { schemas?: Record<string, Schema> };
}

let loaded: OpenApiDocument | undefined;

/** The snapshot the SDK was generated from (sdk/openapi.json, shipped with the package): what the mock answers by. */
export function sdkDocument(): OpenApiDocument {
  // From src/mock/ and from dist/mock/ alike, the package root is two folders up.
  loaded ??= JSON.parse(readFileSync(path.join(__dirname, '..', '..', 'openapi.json'), 'utf8')) as OpenApiDocument;
  return loaded;
}

/** A JSON pointer's segment (RFC 6901). */
export const pointer = (...segments: string[]): string =>
  segments.map((s) => s.replace(/~/g, '~0').replace(/\//g, '~1')).join('/');
