import Router, { type HTTPMethod } from 'find-my-way';

/**
 * Every route's methods by path, matched by Fastify's own router library (find-my-way, with Fastify's defaults), so a
 * path that exists for other methods than the one asked can be told from a path that does not exist (405, not 404).
 */
export class AllowedMethods<S> {
  private readonly router = Router();
  private readonly methods = new Set<HTTPMethod>();

  add(method: HTTPMethod, url: string, store: S): void {
    if (this.router.hasRoute(method, url)) return;
    this.router.on(method, url, () => undefined, store);
    this.methods.add(method);
  }

  /** The methods `path` (query string allowed) has routes for, and what its first route stored; undefined if none. */
  of(path: string): { methods: HTTPMethod[]; store: S } | undefined {
    const found = [...this.methods].flatMap((method) => {
      const hit = this.router.find(method, path);
      return hit ? [{ method, store: hit.store as S }] : [];
    });
    if (found.length === 0) return undefined;
    return { methods: found.map((f) => f.method).sort(), store: found[0]!.store };
  }
}
