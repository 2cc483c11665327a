import { createHash } from 'node:crypto';
import { Client, type Pool } from 'pg';
import type { Logger } from '../../common/logger';
import { CEILING_SUBJECT, type LimitRule } from '../../common/store/limits';
import { PLATFORM_PRICE, type Price } from '../../common/store/prices';
import type { RoutingStore, VersionServing } from '../../common/store/routing';
import { loadProviderTargets, type GatewayProviders } from './providers';

export const ROUTING_STRATEGIES = ['stable', 'canary', 'ab_test', 'cost', 'latency'] as const;
export type RoutingStrategy = (typeof ROUTING_STRATEGIES)[number] | 'weighted';

export interface Upstream {
  version: string;
  /** Base URL as registered (…/v1); null while the version has no endpoint. */
  url: string | null;
  origin: string;
  basePath: string;
  /** Whose failures open one circuit: a model server's origin, or one registered provider. */
  breakerKey: string;
  /** An external provider's call: its credential and extra headers, the model it names, Azure's api-version. */
  provider?: { headers: Record<string, string>; model: string; query: string };
  /** The replica owner's state; undefined: no rollout recorded the version (or a provider), so nothing can bring it back. */
  serving?: VersionServing;
}

export interface CompiledRoute {
  modelId: string;
  stable: Upstream;
  canary: Upstream | null;
  canaryWeight: number;
  /** Tried in this order after the chosen target (and stable) failed before the first byte. */
  fallbacks: Upstream[];
}

const CHANNEL = 'llmhub_gateway';
const RECONNECT_MS = 1_000;

function upstreamOf(version: string, url: string | null | undefined, serving: VersionServing | undefined): Upstream {
  if (!url) return { version, url: null, origin: '', basePath: '', breakerKey: '', serving };
  const u = new URL(url);
  return { version, url, origin: u.origin, basePath: u.pathname.replace(/\/$/, ''), breakerKey: u.origin, serving };
}

/** 0-99 from a caller's identity: the same user always lands in the same A/B bucket, on every replica. */
export const abBucket = (identity: string): number =>
  createHash('sha256').update(identity).digest().readUInt32BE(0) % 100;

/**
 * Which upstream serves a request. Weighted traffic splits at random by the canary weight; `ab_test` splits by
 * a hash of the caller (sticky); `stable`/`canary` pin a version (canary falls back to stable when there is none).
 */
export function pickUpstream(
  route: CompiledRoute,
  strategy: RoutingStrategy,
  identity: string,
  random = Math.random,
): Upstream {
  if (!route.canary || strategy === 'stable' || strategy === 'cost' || strategy === 'latency') return route.stable;
  if (strategy === 'canary') return route.canary;
  const roll = strategy === 'ab_test' ? abBucket(identity) : random() * 100;
  return roll < route.canaryWeight ? route.canary : route.stable;
}

/**
 * A replica's in-memory copy of routes, weights, projects and limits. It is refreshed when PostgreSQL
 * announces a change (LISTEN llmhub_gateway) and, in case a notification is lost (connection drop, restart),
 * every `refreshMs` regardless: a change is visible on every replica within refreshMs plus one read.
 */
export class RouteTable {
  private routes = new Map<string, CompiledRoute>();
  private projects = new Map<string, Set<string>>();
  private limits = new Map<string, LimitRule>();
  /** By `${tenant}\0${model}\0${version}`; tenant '' for the platform's, version '' for the whole model's. */
  private prices = new Map<string, Price>();
  /** By `${tenant}\0${project}`; project '' for the whole tenant's. */
  private budgets = new Map<string, LimitRule>();
  private budgetTenants = new Set<string>();
  private refreshing: Promise<void> | undefined;
  private again = false;
  private listener: Client | undefined;
  private timers: NodeJS.Timeout[] = [];
  private closed = false;
  private readonly refreshed = new Set<() => void>();
  /** Bumped by every applied snapshot; tests and logs can tell one refresh from the next. */
  generation = 0;

  constructor(
    private readonly deps: {
      db: Pool;
      store: RoutingStore;
      logger: Pick<Logger, 'warn' | 'error'>;
      refreshMs: number;
      onKeyChanged: (keyId: string) => void;
      /** A tenant was suspended, resumed or deleted: every cached verdict of its keys and tokens is stale. */
      onTenantChanged: (tenantId: string) => void;
      /** External providers; none: only deployed versions are routed. */
      providers?: GatewayProviders;
    },
  ) {}

  async start(): Promise<void> {
    await this.refresh();
    await this.listen();
    const poll = setInterval(
      () => void this.refresh().catch((err) => this.deps.logger.warn({ err }, 'gateway route refresh failed')),
      this.deps.refreshMs,
    );
    poll.unref();
    this.timers.push(poll);
  }

  route(tenantId: string, modelId: string): CompiledRoute | undefined {
    return this.routes.get(`${tenantId}\0${modelId}`);
  }

  /** Calls `fn` after each applied snapshot until the returned function is called. */
  onRefresh(fn: () => void): () => void {
    this.refreshed.add(fn);
    return () => this.refreshed.delete(fn);
  }

  hasProject(tenantId: string, projectId: string): boolean {
    return this.projects.get(tenantId)?.has(projectId) ?? false;
  }

  /** The limits that apply to a caller: the tenant's and the caller's own, and the tenant's and project's budgets. */
  limitsFor(tenantId: string, subject: string, projectId: string): LimitRule[] {
    const out: LimitRule[] = [];
    const ceiling = this.limits.get(`${tenantId}\0${CEILING_SUBJECT}`);
    const tenant = this.limits.get(`${tenantId}\0`);
    const own = this.limits.get(`${tenantId}\0${subject}`);
    if (ceiling) out.push(ceiling);
    if (tenant) out.push(tenant);
    if (own) out.push(own);
    if (this.budgets.size) {
      const budget = this.budgets.get(`${tenantId}\0`);
      const project = this.budgets.get(`${tenantId}\0${projectId}`);
      if (budget) out.push(budget);
      if (project) out.push(project);
    }
    return out;
  }

  hasBudget(tenantId: string): boolean {
    return this.budgetTenants.has(tenantId);
  }

  /**
   * The price in effect of a model version for a tenant: the platform's before the tenant's, a version's own before
   * the model's (as common/store/prices.ts PRICED_USAGE prices the metered usage).
   */
  priceOf(tenantId: string, modelId: string, version: string): Price | undefined {
    if (this.prices.size === 0) return undefined;
    return (
      this.prices.get(`${PLATFORM_PRICE}\0${modelId}\0${version}`) ??
      this.prices.get(`${PLATFORM_PRICE}\0${modelId}\0`) ??
      this.prices.get(`${tenantId}\0${modelId}\0${version}`) ??
      this.prices.get(`${tenantId}\0${modelId}\0`)
    );
  }

  /** Re-reads the snapshot; calls during a read coalesce into one more read after it. */
  refresh(): Promise<void> {
    if (this.refreshing) {
      this.again = true;
      return this.refreshing;
    }
    this.refreshing = (async () => {
      try {
        do {
          this.again = false;
          const snap = await this.deps.store.snapshot();
          const provided = this.deps.providers ? await loadProviderTargets(this.deps.providers, this.deps.logger) : [];
          const routes = new Map<string, CompiledRoute>();
          for (const r of snap.routes) {
            routes.set(`${r.tenantId}\0${r.modelId}`, {
              modelId: r.modelId,
              stable: upstreamOf(r.stable, r.endpoints[r.stable], r.serving[r.stable]),
              canary: r.canary ? upstreamOf(r.canary, r.endpoints[r.canary], r.serving[r.canary]) : null,
              canaryWeight: r.canaryWeight,
              fallbacks: [],
            });
          }
          for (const t of provided) {
            const key = `${t.tenantId}\0${t.modelId}`;
            const deployed = routes.get(key);
            const stable = t.stable ?? deployed?.stable;
            // A provider route whose stable is neither a provider nor a deployed version has nothing to serve.
            if (!stable) continue;
            routes.set(key, {
              modelId: t.modelId,
              stable,
              canary: t.canary ?? deployed?.canary ?? null,
              canaryWeight: t.canary ? t.canaryWeight : (deployed?.canaryWeight ?? 0),
              fallbacks: t.fallbacks,
            });
          }
          const projects = new Map<string, Set<string>>();
          for (const p of snap.projects) projects.set(p.tenantId, (projects.get(p.tenantId) ?? new Set()).add(p.id));
          this.routes = routes;
          this.projects = projects;
          this.limits = new Map(snap.limits.map((l) => [`${l.tenantId}\0${l.subject}`, l]));
          this.prices = new Map(snap.prices.map((p) => [`${p.tenantId}\0${p.modelId}\0${p.version}`, p]));
          this.budgets = new Map(snap.budgets.map((b) => [`${b.tenantId}\0${b.projectId}`, b]));
          this.budgetTenants = new Set(snap.budgets.map((b) => b.tenantId));
          this.generation++;
          for (const fn of this.refreshed) fn();
        } while (this.again && !this.closed);
      } finally {
        this.refreshing = undefined;
      }
    })();
    return this.refreshing;
  }

  private async listen(): Promise<void> {
    if (this.closed) return;
    const client = new Client(this.deps.db.options);
    const retry = (err?: Error) => {
      if (this.listener !== client) return;
      this.listener = undefined;
      client.end().catch(() => undefined);
      if (this.closed) return;
      this.deps.logger.warn({ err }, 'gateway change feed lost; reconnecting (polling covers the gap)');
      // Whatever changed while the feed was down is read right after it is back.
      const t = setTimeout(
        () =>
          void this.listen()
            .then(() => this.refresh())
            .catch((e) => this.deps.logger.warn({ err: e }, 'gateway route refresh failed')),
        RECONNECT_MS,
      );
      t.unref();
      this.timers.push(t);
    };
    this.listener = client;
    client.on('error', retry);
    client.on('end', () => retry());
    client.on('notification', (n) => {
      if (n.payload?.startsWith('key:')) this.deps.onKeyChanged(n.payload.slice(4));
      else if (n.payload?.startsWith('tenant:')) this.deps.onTenantChanged(n.payload.slice(7));
      else void this.refresh().catch((err) => this.deps.logger.warn({ err }, 'gateway route refresh failed'));
    });
    try {
      await client.connect();
      await client.query(`LISTEN ${CHANNEL}`);
    } catch (err) {
      retry(err as Error);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    this.timers.forEach(clearTimeout);
    const l = this.listener;
    this.listener = undefined;
    await l?.end().catch(() => undefined);
    await this.refreshing?.catch(() => undefined);
  }
}
