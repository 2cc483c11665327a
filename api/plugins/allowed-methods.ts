import Router, { type HTTPMethod } from 'find-my-way';

/** What Fastify's router answers for a method and path: the route's params, or null when it has none. */
export type FindRoute = (method: HTTPMethod, path: string) => { params: Record<string, string | undefined> } | null;

/**
 * The methods a path has routes for, asked of Fastify's own router (which alone knows how a prefixed `/` route was
 * registered), so a path that exists for other methods than the one asked can be told from a path that does not exist
 * (405, not 404); and what each route stored (its error renderer), found by find-my-way with Fastify's defaults.
 */
export class AllowedMethods<S> {
  private readonly stores = Router({ ignoreTrailingSlash: true });
  private readonly methods = new Set<HTTPMethod>();

  add(method: HTTPMethod, url: string, store: S): void {
    this.methods.add(method);
    // Trailing slashes are ignored here: `/v1/models` and `/v1/models/` are one entry.
    const key = url.length > 1 ? url.replace(/\/$/, '') : url;
    if (!this.stores.hasRoute(method, key)) this.stores.on(method, key, () => undefined, store);
  }

  /** The methods `path` (no query string) has routes for, and what the first of them stored; undefined if none. */
  of(path: string, find: FindRoute): { methods: HTTPMethod[]; store: S | undefined } | undefined {
    const methods = [...this.methods]
      .filter((method) => {
        const hit = find(method, path);
        // `/v1/agent-runs/` is not `/v1/agent-runs/:id` with an empty id, as the document has it.
        return hit !== null && Object.values(hit.params).every((v) => v !== '' && v !== undefined);
      })
      .sort();
    if (methods.length === 0) return undefined;
    return { methods, store: this.stores.find(methods[0]!, path)?.store as S | undefined };
  }
}
