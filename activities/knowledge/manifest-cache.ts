/**
 * Parsed manifests for the batches of a run, so a worker reads a run's manifest once rather than once per batch: a
 * 100,000-document source lists to ~14 MB of JSON, which 4,000 batches of 25 documents would each download and parse
 * (the cost grows with the square of the source's size). The key must name the run as well as the manifest: the
 * manifest's key is its ingestion's, and a later ingestion that reuses the id (its idempotency key expired) rewrites
 * it; within a run it never changes, since the run lists its source before its first batch.
 *
 * Concurrent misses share one read; a failed read is not kept. At most `maxEntries` are kept, the least recently used
 * going first, and each is dropped after `idleMs` without a use, so an idle worker does not hold a large one.
 */
export class ManifestCache<T> {
  private readonly entries = new Map<string, { value: Promise<T>; expiry?: NodeJS.Timeout }>();

  constructor(
    private readonly maxEntries: number,
    private readonly idleMs: number,
  ) {}

  get(key: string, read: () => Promise<T>): Promise<T> {
    const hit = this.entries.get(key);
    const entry = hit ?? { value: read() };
    this.entries.delete(key);
    if (this.entries.size >= this.maxEntries) this.drop(this.entries.keys().next().value!);
    this.entries.set(key, entry);
    if (!hit) entry.value.catch(() => this.entries.get(key) === entry && this.drop(key));
    clearTimeout(entry.expiry);
    entry.expiry = setTimeout(() => this.entries.get(key) === entry && this.drop(key), this.idleMs);
    entry.expiry.unref();
    return entry.value;
  }

  get size(): number {
    return this.entries.size;
  }

  private drop(key: string): void {
    clearTimeout(this.entries.get(key)?.expiry);
    this.entries.delete(key);
  }
}
