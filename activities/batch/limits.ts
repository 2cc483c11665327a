/** Lines of one batch in flight at once, on one worker. */
export const BATCH_CONCURRENCY = 32;
/** Lines of one tenant's batches in flight at once, on one worker: a tenant's batches queue behind each other. */
export const TENANT_BATCH_CONCURRENCY = 64;

/** A counting semaphore; waiters are served in order. */
class Semaphore {
  private held = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(private readonly size: number) {}

  get idle(): boolean {
    return this.held === 0 && this.waiting.length === 0;
  }

  async acquire(): Promise<void> {
    if (this.held < this.size) {
      this.held++;
      return;
    }
    await new Promise<void>((resolve) => this.waiting.push(resolve));
  }

  release(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.held--;
  }
}

/** Semaphores by name (a batch, a tenant), made on first use and dropped when nothing holds or waits on them. */
export class NamedSlots {
  private readonly slots = new Map<string, Semaphore>();

  constructor(private readonly size: number) {}

  async run<T>(name: string, fn: () => Promise<T>): Promise<T> {
    let s = this.slots.get(name);
    if (!s) this.slots.set(name, (s = new Semaphore(this.size)));
    await s.acquire();
    try {
      return await fn();
    } finally {
      s.release();
      if (s.idle) this.slots.delete(name);
    }
  }
}
