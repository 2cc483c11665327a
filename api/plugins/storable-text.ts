import type { FastifyInstance, FastifyRequest, FastifySchema } from 'fastify';
import { BadRequestError } from '../../common/errors';
import { isStorableText } from '../../common/storable-text';

/**
 * Text PostgreSQL cannot hold as sent (isStorableText) would surface as a 500 or as quietly changed data, so control
 * requests carrying one are refused up front, naming where it is.
 */
export function unstorableTextAt(value: unknown, at: string): string | undefined {
  if (typeof value === 'string') return isStorableText(value) ? undefined : at;
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

/** What every free-text string of a control request must match: no NUL (the hook below says why). */
const STORABLE = '^[^\\u0000]*$';

type Schema = Record<string | symbol, unknown>;
const isSchema = (v: unknown): v is Schema => typeof v === 'object' && v !== null && !Array.isArray(v);
const eachSchema = (v: unknown, f: (s: Schema) => Schema) =>
  Array.isArray(v) ? v.map((s) => (isSchema(s) ? f(s) : s)) : v;
const schemaMap = (v: unknown, f: (s: Schema) => Schema) =>
  isSchema(v) ? Object.fromEntries(Object.entries(v).map(([k, s]) => [k, isSchema(s) ? f(s) : s])) : v;

/**
 * A copy of a request schema as the route really checks it, for the document: free strings (no pattern, format, enum
 * or const of their own) and the keys of open maps take no NUL (the hook below enforces it), and a property with a
 * default is not required (the validator fills it in). Copies: schemas are shared.
 */
export function storableTextSchema(schema: Schema): Schema {
  const out: Schema = { ...schema };
  const props = out.properties;
  if (Array.isArray(out.required) && isSchema(props))
    out.required = out.required.filter((k: string) => !(isSchema(props[k]) && 'default' in props[k]));
  if (out.type === 'string' && !('pattern' in out || 'format' in out || 'enum' in out || 'const' in out))
    out.pattern = STORABLE;
  if (out.properties) out.properties = schemaMap(out.properties, storableTextSchema);
  if (out.patternProperties) out.patternProperties = schemaMap(out.patternProperties, storableTextSchema);
  if (isSchema(out.additionalProperties)) out.additionalProperties = storableTextSchema(out.additionalProperties);
  if ((out.patternProperties || isSchema(out.additionalProperties)) && !out.propertyNames)
    out.propertyNames = { pattern: STORABLE };
  if (isSchema(out.items)) out.items = storableTextSchema(out.items);
  for (const k of ['anyOf', 'oneOf', 'allOf', 'prefixItems'] as const)
    if (out[k]) out[k] = eachSchema(out[k], storableTextSchema);
  return out;
}

/**
 * For a scope of control routes: documents the rule in each route's request schemas, and a preValidation hook refuses
 * every string of the body, query and path parameters that breaks it (before validation, for a message that says why).
 */
export function refuseUnstorableText(app: FastifyInstance): void {
  app.addHook('onRoute', (route) => {
    const schema = route.schema as Record<string, unknown> | undefined;
    if (!schema) return;
    const parts = Object.fromEntries(
      (['body', 'querystring', 'params'] as const).flatMap((k) =>
        isSchema(schema[k]) ? [[k, storableTextSchema(schema[k])]] : [],
      ),
    );
    route.schema = { ...schema, ...parts } as FastifySchema;
  });
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
