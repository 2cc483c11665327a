import Ajv, { type ErrorObject, type ValidateFunction } from 'ajv';
import addFormats from 'ajv-formats';
import { pointer, type OpenApiDocument, type OperationObject, type Schema } from './document';

const DOC_ID = 'llmhub-openapi.json';

/** The field an Ajv error names, the way the platform names it (`body.resources.cpu`, `querystring.limit`). */
function fieldOf(part: string, e: ErrorObject): string {
  const p = e.params as { missingProperty?: string; additionalProperty?: string };
  return [
    part,
    ...e.instancePath.split('/').filter(Boolean),
    ...(p.missingProperty ? [p.missingProperty] : []),
    ...(p.additionalProperty ? [p.additionalProperty] : []),
    ...(e.propertyName ? [e.propertyName] : []),
  ].join('.');
}

export interface Invalid {
  field: string;
  message: string;
}

/**
 * The request checks of the document's schemas, compiled with Ajv as the API compiles them: query strings, path
 * parameters and headers are text coerced to their types; a JSON body is taken as sent (no coercion).
 */
export class RequestValidator {
  private readonly text = new Ajv({ strict: false, coerceTypes: 'array', useDefaults: true, logger: false });
  private readonly json = new Ajv({ strict: false, coerceTypes: false, useDefaults: true, logger: false });
  private readonly cache = new Map<string, ValidateFunction>();

  constructor(doc: OpenApiDocument) {
    for (const ajv of [this.text, this.json]) {
      addFormats(ajv);
      // Uploads are raw bytes (`format: binary`), checked as such by the mock itself.
      ajv.addFormat('binary', true);
      ajv.addSchema(doc as unknown as Schema, DOC_ID);
    }
  }

  private compile(ajv: Ajv, key: string, schema: Schema): ValidateFunction {
    let v = this.cache.get(key);
    if (!v) {
      v = ajv.compile(schema);
      this.cache.set(key, v);
    }
    return v;
  }

  /** Checks the path, query and header parameters (coerced in place) and the JSON body; the first problem found. */
  check(
    template: string,
    method: string,
    op: OperationObject,
    parts: { params: Record<string, unknown>; querystring: Record<string, unknown>; headers: Record<string, unknown> },
    body: unknown,
  ): Invalid | undefined {
    const locations = { params: 'path', querystring: 'query', headers: 'header' } as const;
    for (const [part, where] of Object.entries(locations) as [keyof typeof locations, string][]) {
      const params = (op.parameters ?? []).filter((p) => p.in === where);
      if (!params.length && part !== 'querystring') continue;
      const schema: Schema = {
        type: 'object',
        properties: Object.fromEntries(
          params.map((p) => [
            p.name,
            {
              $ref: `${DOC_ID}#/${pointer('paths', template, method, 'parameters', String(op.parameters!.indexOf(p)), 'schema')}`,
            },
          ]),
        ),
        required: params.filter((p) => p.required).map((p) => p.name),
        // The API refuses a query parameter it does not define (a misspelt filter never widens a list).
        ...(part === 'querystring' ? { additionalProperties: false } : {}),
      };
      const validate = this.compile(this.text, `${method} ${template} ${part}`, schema);
      if (!validate(parts[part])) {
        const e = validate.errors![0]!;
        return { field: fieldOf(part, e), message: e.message ?? 'is invalid' };
      }
    }
    const json = op.requestBody?.content['application/json'];
    if (json) {
      const ref = `${DOC_ID}#/${pointer('paths', template, method, 'requestBody', 'content', 'application/json', 'schema')}`;
      const validate = this.compile(this.json, `${method} ${template} body`, { $ref: ref });
      if (body === undefined && op.requestBody?.required) return { field: 'body', message: 'must be a JSON body' };
      if (body !== undefined && !validate(body)) {
        const e = validate.errors![0]!;
        return { field: fieldOf('body', e), message: e.message ?? 'is invalid' };
      }
    }
    return undefined;
  }
}
