import type { Logger } from '../../common/logger';
import {
  encodeAuditEntry,
  type AuditEntry,
  type AuditStore,
  type EncodedAuditEntry,
  type UnauthenticatedCount,
} from '../../common/store/audit';

/** Rows held while the database cannot take them; past this the oldest are dropped (and logged), not the process. */
const MAX_PENDING = 100_000;
/** Rows per INSERT, so one flush after an outage does not build one huge statement. */
const BATCH = 5_000;

/**
 * This replica's audit rows of inference calls and streams, and its counts of unauthenticated refusals per
 * (address, minute), written in multi-row statements every `flushMs` and at close. What a hard kill of the
 * process catches here (at most one interval's rows) is lost.
 */
export class AuditBuffer {
  private rows: EncodedAuditEntry[] = [];
  private counts = new Map<string, UnauthenticatedCount>();
  private readonly timer: NodeJS.Timeout;
  private flushing: Promise<void> = Promise.resolve();
  private dropped = 0;

  constructor(
    private readonly deps: {
      store: Pick<AuditStore, 'insertEncoded' | 'countUnauthenticated'>;
      flushMs: number;
      logger: Pick<Logger, 'warn' | 'error'>;
    },
  ) {
    this.timer = setInterval(() => void this.flush(), deps.flushMs);
    this.timer.unref();
  }

  add(entry: AuditEntry): void {
    this.rows.push(encodeAuditEntry(entry));
    if (this.rows.length > MAX_PENDING) {
      this.rows.shift();
      this.dropped++;
    }
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
      const rows = this.rows;
      const counts = [...this.counts.values()];
      if (rows.length === 0 && counts.length === 0) return;
      this.rows = [];
      this.counts = new Map();
      let written = 0;
      let counted = false;
      try {
        await this.deps.store.countUnauthenticated(counts);
        counted = true;
        for (; written < rows.length; written += BATCH)
          await this.deps.store.insertEncoded(rows.slice(written, written + BATCH));
      } catch (err) {
        this.deps.logger.warn(
          { err, rows: rows.length - written, counts: counted ? 0 : counts.length },
          'audit flush failed; will retry',
        );
        this.rows = [...rows.slice(written), ...this.rows];
        const over = this.rows.length - MAX_PENDING;
        if (over > 0) {
          this.rows.splice(0, over);
          this.dropped += over;
        }
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

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.flush();
  }
}
