import type { Logger } from '../../common/logger';
import type { ServedVersionStore } from '../../common/store/served-versions';
import type { RouteTable, Upstream } from './route-table';

export interface ColdStartSettings {
  /** Requests one replica holds per version while it starts; past it, 503 at once. */
  coldQueue: number;
  /** How long a held request waits for its version; past it, 503. */
  coldWaitMs: number;
}

type Key = { tenantId: string; modelId: string; version: string };

/**
 * Requests for a version with nothing running (scaled to zero, or a stable version whose server is gone) are held
 * here, in a bounded queue for a bounded time, while the version is woken: a row in served_versions that the api
 * role turns into a signal-with-start of the version's autoscaler (the gateway holds no Temporal client). They go on
 * once the route table shows the version warm again (a newer warm epoch), however many requests and replicas wait.
 */
export class ColdStarts {
  private readonly held = new Map<string, number>();

  constructor(
    private readonly deps: {
      table: RouteTable;
      store: ServedVersionStore;
      settings: ColdStartSettings;
      logger: Pick<Logger, 'warn'>;
    },
  ) {}

  /** Seconds a refused caller is told to wait: the bounded wait itself, the longest a start is given here. */
  get retryAfterSeconds(): number {
    return Math.max(1, Math.ceil(this.deps.settings.coldWaitMs / 1000));
  }

  /**
   * Waits until `u` runs again; 'full' when the version's queue is full, 'timeout' past the wait. `u` is the upstream
   * as the request saw it: its warm epoch is the one that must be passed.
   */
  async hold(k: Key, u: Upstream): Promise<'ready' | 'full' | 'timeout'> {
    const key = `${k.tenantId}\0${k.modelId}\0${k.version}`;
    const waiting = this.held.get(key) ?? 0;
    if (waiting >= this.deps.settings.coldQueue) return 'full';
    this.held.set(key, waiting + 1);
    const since = u.serving?.warmEpoch ?? 0;
    try {
      // One row per version, whatever the number of requests: the store keeps only the first pending request.
      await this.deps.store
        .requestWake(k)
        .catch((err: unknown) => this.deps.logger.warn({ err, ...k }, 'cannot request a wake-up of a cold version'));
      return await this.untilWarm(k, since);
    } finally {
      const left = (this.held.get(key) ?? 1) - 1;
      if (left === 0) this.held.delete(key);
      else this.held.set(key, left);
    }
  }

  private untilWarm(k: Key, since: number): Promise<'ready' | 'timeout'> {
    const { table } = this.deps;
    const warm = () => {
      const route = table.route(k.tenantId, k.modelId);
      const u = [route?.stable, route?.canary].find((x) => x?.version === k.version);
      // A version no longer routed is no longer waited for: the caller picks again from the new route.
      return !u || (u.serving !== undefined && !u.serving.cold && u.serving.warmEpoch > since);
    };
    if (warm()) return Promise.resolve('ready');
    return new Promise((resolve) => {
      const done = (r: 'ready' | 'timeout') => {
        clearTimeout(timer);
        off();
        resolve(r);
      };
      const timer = setTimeout(() => done('timeout'), this.deps.settings.coldWaitMs);
      const off = table.onRefresh(() => {
        if (warm()) done('ready');
      });
    });
  }
}
