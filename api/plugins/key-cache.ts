import type { ApiKeyRecord, TenantStore } from '../../common/store/tenants';

interface Entry {
  at: number;
  record: Promise<ApiKeyRecord | undefined>;
}

/**
 * API key checks from memory, so the inference hot path touches no database. A verdict (valid, revoked or
 * unknown) is trusted for `ttlMs`; `evict` (called on the revocation notification) ends that at once, and the
 * TTL bounds how long a revoked key keeps working when a notification is lost. Concurrent misses for one
 * token share one lookup.
 */
export class ApiKeyCache {
  private readonly entries = new Map<string, Entry>();

  constructor(
    private readonly tenants: Pick<TenantStore, 'verifyApiKey'>,
    private readonly ttlMs: number,
    private readonly maxEntries = 50_000,
  ) {}

  verifyApiKey(token: string): Promise<ApiKeyRecord | undefined> {
    const now = Date.now();
    const hit = this.entries.get(token);
    if (hit && now - hit.at < this.ttlMs) return hit.record;
    const record = this.tenants.verifyApiKey(token);
    // A failed lookup must not be cached: the next call retries the database.
    record.catch(() => this.entries.delete(token));
    this.entries.delete(token);
    // Map order is insertion order, so the first entry is the oldest.
    if (this.entries.size >= this.maxEntries) this.entries.delete(this.entries.keys().next().value!);
    this.entries.set(token, { at: now, record });
    return record;
  }

  /** Forgets every cached token of the key (tokens embed the key id: `llmhub_<id>_<secret>`). */
  evict(keyId: string): void {
    const marker = `llmhub_${keyId}_`;
    for (const token of this.entries.keys()) if (token.startsWith(marker)) this.entries.delete(token);
  }

  clear(): void {
    this.entries.clear();
  }
}
