import type { OpenApiDocument, Schema } from './document';

/** The one instant the mock's answers carry, so they are the same on every run. */
export const MOCK_TIME = '2026-01-01T00:00:00.000Z';

function resolve(doc: OpenApiDocument, schema: Schema): Schema {
  const ref = schema.$ref;
  if (typeof ref !== 'string') return schema;
  const name = ref.replace('#/components/schemas/', '');
  return doc.components?.schemas?.[name] ?? {};
}

/**
 * The smallest value a response schema accepts (required properties only; the first choice of an anyOf that is not
 * null; enums' first value; minimums): what the mock answers for an operation it keeps no state for, and the base
 * the stateful answers overlay.
 */
export function sampleOf(doc: OpenApiDocument, schema: Schema): unknown {
  const s = resolve(doc, schema);
  if ('const' in s) return s.const;
  if (Array.isArray(s.enum)) return s.enum[0];
  if (s.default !== undefined) return s.default;
  const choices = (s.anyOf ?? s.oneOf) as Schema[] | undefined;
  if (choices) {
    const nonNull = choices.find((c) => resolve(doc, c).type !== 'null');
    return sampleOf(doc, nonNull ?? choices[0]!);
  }
  const type = Array.isArray(s.type) ? (s.type as string[]).find((t) => t !== 'null') : (s.type as string | undefined);
  switch (type) {
    case 'object': {
      const props = (s.properties ?? {}) as Record<string, Schema>;
      const required = (s.required ?? []) as string[];
      return Object.fromEntries(required.filter((k) => props[k]).map((k) => [k, sampleOf(doc, props[k]!)]));
    }
    case 'array':
      return [];
    case 'string':
      if (s.format === 'date-time') return MOCK_TIME;
      return 'x'.repeat(Math.max(1, Number(s.minLength ?? 1)));
    case 'integer':
    case 'number':
      return Number(s.minimum ?? (s.exclusiveMinimum !== undefined ? Number(s.exclusiveMinimum) + 1 : 0));
    case 'boolean':
      return false;
    case 'null':
      return null;
    default:
      return (s.properties ? sampleOf(doc, { ...s, type: 'object' }) : null) as unknown;
  }
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** `over` laid on `base`, objects merged key by key, anything else replaced. */
export function overlay(base: unknown, over: unknown): unknown {
  if (!isObject(base) || !isObject(over)) return over === undefined ? base : over;
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) out[k] = overlay(base[k], v);
  return out;
}
