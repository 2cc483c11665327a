import type { AuditEntry, AuditStore } from '../../common/store/audit';

/** Rows per INSERT, so a burst does not build one huge statement. */
const BATCH = 1_000;

interface Waiting {
  row: AuditEntry;
  written: () => void;
  failed: (err: unknown) => void;
}

/**
 * The control routes' audit rows, each written before its answer leaves, with a group commit: rows that arrive while
 * an INSERT is in flight go together in the next one, so concurrent calls share a statement instead of taking one
 * each. A lone call waits for its own INSERT only, as before; each caller learns whether its row was written.
 */
export class AuditWriter {
  private waiting: Waiting[] = [];
  private writing = false;

  constructor(private readonly store: Pick<AuditStore, 'insert'>) {}

  write(row: AuditEntry): Promise<void> {
    return new Promise((written, failed) => {
      this.waiting.push({ row, written, failed });
      if (!this.writing) void this.drain();
    });
  }

  private async drain(): Promise<void> {
    this.writing = true;
    while (this.waiting.length > 0) {
      const batch = this.waiting.splice(0, BATCH);
      try {
        await this.store.insert(batch.map((w) => w.row));
        for (const w of batch) w.written();
      } catch (err) {
        for (const w of batch) w.failed(err);
      }
    }
    this.writing = false;
  }
}
