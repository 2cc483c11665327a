import type { ApiKeyRecord, TenantStore } from '../../common/store/tenants';

interface Entry<V> {
  at: number;
  value: Promise<V>;
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
    value.catch(() => this.entries.delete(key));
    this.entries.delete(key);
    // Map order is insertion order, so the first entry is the oldest.
    if (this.entries.size >= this.maxEntries) this.entries.delete(this.entries.keys().next().value!);
    this.entries.set(key, { at: now, value });
    return value;
  }

  deleteWhere(matches: (key: string) => boolean): void {
    for (const key of this.entries.keys()) if (matches(key)) this.entries.delete(key);
  }

  clear(): void {
    this.entries.clear();
  }
}

/**
 * API key verdicts (valid, revoked or unknown), trusted for the TTL; `evict` (called on the revocation notification)
 * ends that at once, and the TTL bounds how long a revoked key keeps working when a notification is lost.
 */
export class ApiKeyCache {
  private readonly cache: LookupCache<ApiKeyRecord | undefined>;

  constructor(tenants: Pick<TenantStore, 'verifyApiKey'>, ttlMs: number, maxEntries?: number) {
    this.cache = new LookupCache((token) => tenants.verifyApiKey(token), ttlMs, maxEntries);
  }

  verifyApiKey(token: string): Promise<ApiKeyRecord | undefined> {
    return this.cache.get(token);
  }

  /** Forgets every cached token of the key (tokens embed the key id: `llmhub_<id>_<secret>`). */
  evict(keyId: string): void {
    const marker = `llmhub_${keyId}_`;
    this.cache.deleteWhere((token) => token.startsWith(marker));
  }

  clear(): void {
    this.cache.clear();
  }
}
