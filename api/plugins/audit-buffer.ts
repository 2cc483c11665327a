import type { Logger } from '../../common/logger';
import {
  encodeAuditEntry,
  type AuditEntry,
  type AuditStore,
  type UnauthenticatedCount,
} from '../../common/store/audit';

/** Rows held while the database cannot take them; past this the oldest are dropped (and logged), not the process. */
const MAX_PENDING = 100_000;
/** Rows per INSERT at most, so one flush after an outage does not build one huge statement. */
const BATCH = 5_000;
/** A chunk's bytes: some 2,500 rows of inference calls (a row too large for one gets a chunk of its own). */
const CHUNK_BYTES = 1 << 20;
/** Written chunks kept for reuse, so a busy replica does not allocate a megabyte every fraction of a second. */
const SPARE_CHUNKS = 4;
const OPEN = 0x5b; // [
const COMMA = 0x2c;
const CLOSE = 0x5d; // ]

/**
 * Rows as the UTF-8 text of a JSON array (`[`, then rows separated by commas; the `]` is put at the end when it is
 * written), one INSERT each. Off the JavaScript heap: rows wait up to a flush interval, long enough to be copied by two
 * young-generation collections and promoted, and as strings they were most of what those collections copied.
 */
interface Chunk {
  bytes: Buffer;
  length: number;
  rows: number;
}

/**
 * This replica's audit rows of inference calls and streams, and its counts of unauthenticated refusals per
 * (address, minute), written in multi-row statements every `flushMs` and at close. What a hard kill of the
 * process catches here (at most one interval's rows) is lost.
 */
export class AuditBuffer {
  private chunks: Chunk[] = [];
  /** Rows in `chunks`. */
  private pending = 0;
  private readonly spares: Buffer[] = [];
  private counts = new Map<string, UnauthenticatedCount>();
  private readonly timer: NodeJS.Timeout;
  private flushing: Promise<void> = Promise.resolve();
  private dropped = 0;

  constructor(
    private readonly deps: {
      store: Pick<AuditStore, 'insertJson' | 'countUnauthenticated'>;
      flushMs: number;
      logger: Pick<Logger, 'warn' | 'error'>;
    },
  ) {
    this.timer = setInterval(() => void this.flush(), deps.flushMs);
    this.timer.unref();
  }

  add(entry: AuditEntry): void {
    const row = encodeAuditEntry(entry);
    // UTF-8 takes at most 3 bytes per UTF-16 unit; one more for the comma before and the bracket after.
    const room = row.length * 3 + 2;
    let chunk = this.chunks.at(-1);
    if (!chunk || chunk.rows >= BATCH || chunk.length + room > chunk.bytes.length) {
      chunk = { bytes: this.chunkOf(room + 1), length: 0, rows: 0 };
      this.chunks.push(chunk);
    }
    chunk.bytes[chunk.length++] = chunk.rows === 0 ? OPEN : COMMA;
    chunk.length += chunk.bytes.write(row, chunk.length);
    chunk.rows++;
    this.pending++;
    this.dropOverLimit();
  }

  unauthenticated(ip: string, now = Date.now()): void {
    const minute = Math.floor(now / 60_000) * 60_000;
    const key = `${ip}\0${minute}`;
    const c = this.counts.get(key);
    if (c) c.count++;
    else this.counts.set(key, { ip, minute, count: 1 });
  }

  /** Writes what was buffered; what fails is put back for the next flush. */
  flush(): Promise<void> {
    this.flushing = this.flushing.then(async () => {
      if (this.dropped) {
        this.deps.logger.error({ dropped: this.dropped }, 'audit rows dropped: the database took none for too long');
        this.dropped = 0;
      }
      const chunks = this.chunks;
      const counts = [...this.counts.values()];
      if (chunks.length === 0 && counts.length === 0) return;
      this.chunks = [];
      this.pending = 0;
      this.counts = new Map();
      let written = 0;
      let counted = false;
      try {
        await this.deps.store.countUnauthenticated(counts);
        counted = true;
        for (; written < chunks.length; written++) {
          const chunk = chunks[written]!;
          chunk.bytes[chunk.length] = CLOSE;
          await this.deps.store.insertJson(chunk.bytes.subarray(0, chunk.length + 1));
          if (chunk.bytes.length === CHUNK_BYTES && this.spares.length < SPARE_CHUNKS) this.spares.push(chunk.bytes);
        }
      } catch (err) {
        const kept = chunks.slice(written);
        const rows = kept.reduce((n, c) => n + c.rows, 0);
        this.deps.logger.warn({ err, rows, counts: counted ? 0 : counts.length }, 'audit flush failed; will retry');
        this.chunks = [...kept, ...this.chunks];
        this.pending += rows;
        this.dropOverLimit();
        if (!counted)
          for (const c of counts) {
            const key = `${c.ip}\0${c.minute}`;
            const cur = this.counts.get(key);
            if (cur) cur.count += c.count;
            else this.counts.set(key, c);
          }
      }
    });
    return this.flushing;
  }

  /** The oldest chunks go, whole, while more than MAX_PENDING rows wait. */
  private dropOverLimit(): void {
    while (this.pending > MAX_PENDING && this.chunks.length > 1) {
      const oldest = this.chunks.shift()!;
      this.pending -= oldest.rows;
      this.dropped += oldest.rows;
    }
  }

  private chunkOf(bytes: number): Buffer {
    if (bytes > CHUNK_BYTES) return Buffer.allocUnsafeSlow(bytes);
    return this.spares.pop() ?? Buffer.allocUnsafeSlow(CHUNK_BYTES);
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.flush();
  }
}
