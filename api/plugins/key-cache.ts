import type { ApiKeyRecord, TenantStore } from '../../common/store/tenants';

/** Sets `key` as the newest entry of `map`; past `max` entries the oldest goes (Map order is insertion order). */
export function setBounded<K, V>(map: Map<K, V>, key: K, value: V, max: number): void {
  map.delete(key);
  if (map.size >= max) map.delete(map.keys().next().value!);
  map.set(key, value);
}

interface Entry<V> {
  at: number;
  value: Promise<V>;
  /** The lookup's answer once it has come. */
  settled?: { value: V };
}

/**
 * Answers from memory for `ttlMs`, so the inference hot path touches no database for what it has seen. Concurrent
 * misses for one key share one lookup; a failed lookup is not kept (the next call retries); past `maxEntries` the
 * oldest entry goes.
 */
export class LookupCache<V> {
  private readonly entries = new Map<string, Entry<V>>();

  constructor(
    private readonly lookup: (key: string) => Promise<V>,
    private readonly ttlMs: number,
    private readonly maxEntries = 50_000,
  ) {}

  get(key: string): Promise<V> {
    const now = Date.now();
    const hit = this.entries.get(key);
    if (hit && now - hit.at < this.ttlMs) return hit.value;
    const value = this.lookup(key);
    const entry: Entry<V> = { at: now, value };
    value.then(
      (v) => (entry.settled = { value: v }),
      () => this.entries.delete(key),
    );
    setBounded(this.entries, key, entry, this.maxEntries);
    return value;
  }

  /** A fresh entry's answer without a promise, once its lookup has come; undefined otherwise (then `get`). */
  peek(key: string): { value: V } | undefined {
    const hit = this.entries.get(key);
    return hit && Date.now() - hit.at < this.ttlMs ? hit.settled : undefined;
  }

  deleteWhere(matches: (key: string) => boolean): void {
    for (const key of this.entries.keys()) if (matches(key)) this.entries.delete(key);
  }

  clear(): void {
    this.entries.clear();
  }
}

export interface ApiKeyCacheLimits {
  /** Tokens that are keys of the platform (valid, revoked or expired). */
  maxKnown?: number;
  /** Tokens that are no key: a flood of made-up keys fills only these, never pushing out a known key. */
  maxUnknown?: number;
}

/**
 * API key verdicts, trusted for the TTL. Known keys and unknown tokens are kept apart, each bounded: unknown tokens
 * cost a caller nothing to make, so they must not displace the keys real clients use. A known key's entry outlives
 * its TTL (until pushed out by other known keys): then it is looked up again, but the token stays recognised, which
 * is what exempts it from the failed-authentication budget (api/plugins/auth.ts). `evict` (called on the revocation
 * notification) and `clear` (on a tenant's change) end the trust at once; the TTL bounds how long a revoked key keeps
 * working when a notification is lost.
 */
export class ApiKeyCache {
  private readonly known = new Map<string, { at: number; record: ApiKeyRecord }>();
  private readonly unknown = new Map<string, number>();
  /** Lookups in flight, shared by concurrent misses; dropped by evict and clear, so their answer is not kept. */
  private readonly pending = new Map<string, Promise<ApiKeyRecord | undefined>>();
  private readonly maxKnown: number;
  private readonly maxUnknown: number;

  constructor(
    private readonly tenants: Pick<TenantStore, 'verifyApiKey'>,
    private readonly ttlMs: number,
    limits: ApiKeyCacheLimits = {},
  ) {
    this.maxKnown = limits.maxKnown ?? 50_000;
    this.maxUnknown = limits.maxUnknown ?? 10_000;
  }

  /** Whether the token has verified as a key of this platform, and is still remembered as one. */
  recognises(token: string): boolean {
    return this.known.has(token);
  }

  /** The key's record while its verdict is fresh, without a promise: what the inference hot path asks first. */
  cached(token: string): ApiKeyRecord | undefined {
    const hit = this.known.get(token);
    return hit && Date.now() - hit.at < this.ttlMs ? hit.record : undefined;
  }

  verifyApiKey(token: string): Promise<ApiKeyRecord | undefined> {
    const now = Date.now();
    const hit = this.known.get(token);
    if (hit && now - hit.at < this.ttlMs) return Promise.resolve(hit.record);
    const refused = this.unknown.get(token);
    if (refused !== undefined && now - refused < this.ttlMs) return Promise.resolve(undefined);
    const inFlight = this.pending.get(token);
    if (inFlight) return inFlight;
    const lookup = this.tenants.verifyApiKey(token).then((record) => {
      if (this.pending.get(token) !== lookup) return record;
      this.pending.delete(token);
      if (record) {
        this.unknown.delete(token);
        setBounded(this.known, token, { at: now, record }, this.maxKnown);
      } else {
        this.known.delete(token);
        setBounded(this.unknown, token, now, this.maxUnknown);
      }
      return record;
    });
    lookup.catch(() => {
      if (this.pending.get(token) === lookup) this.pending.delete(token);
    });
    this.pending.set(token, lookup);
    return lookup;
  }

  /** Forgets every verdict on the key's tokens (tokens embed the key id: `llmhub_<id>_<secret>`); still recognised. */
  evict(keyId: string): void {
    const marker = `llmhub_${keyId}_`;
    for (const [token, entry] of this.known) if (token.startsWith(marker)) entry.at = -Infinity;
    for (const token of this.unknown.keys()) if (token.startsWith(marker)) this.unknown.delete(token);
    for (const token of this.pending.keys()) if (token.startsWith(marker)) this.pending.delete(token);
  }

  /** Forgets every verdict; known keys stay recognised, and are looked up again at their next use. */
  clear(): void {
    for (const entry of this.known.values()) entry.at = -Infinity;
    this.unknown.clear();
    this.pending.clear();
  }
}
