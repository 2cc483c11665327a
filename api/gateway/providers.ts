import type { Logger } from '../../common/logger';
import type { CredentialVault } from '../../common/credentials';
import type { Price } from '../../common/store/prices';
import {
  credentialContext,
  PLATFORM_PREFIX,
  providerRef,
  providerTarget,
  type Provider,
  type ProviderStore,
} from '../../common/store/providers';
import type { Upstream } from './route-table';

/** What the gateway needs to call external providers: their store and the vault their credentials open with. */
export interface GatewayProviders {
  store: Pick<ProviderStore, 'snapshot'>;
  vault: CredentialVault;
}

/** A gateway model's provider targets, compiled: stable/canary replace the deployed route's where set. */
export interface ProviderTargets {
  tenantId: string;
  modelId: string;
  stable: Upstream | null;
  canary: Upstream | null;
  canaryWeight: number;
  fallbacks: Upstream[];
}

/** Headers the platform sets itself; a provider's extra headers may not name them. */
export const RESERVED_HEADERS = [
  'authorization',
  'api-key',
  'host',
  'content-length',
  'content-type',
  'transfer-encoding',
  'connection',
  'keep-alive',
  'upgrade',
  'te',
  'trailer',
  'proxy-authorization',
  'expect',
];

/** The call to one provider model: where (Azure's deployment path and api-version), with what headers, as which model. */
export function providerUpstream(p: Provider, credential: string, gatewayModel: string): Upstream | undefined {
  const m = p.models[gatewayModel];
  if (!m) return undefined;
  const url = new URL(p.baseUrl);
  const base = url.pathname.replace(/\/$/, '');
  const azure = p.kind === 'azure';
  return {
    version: providerTarget(providerRef(p)),
    url: p.baseUrl,
    origin: url.origin,
    basePath: azure ? `${base}/openai/deployments/${encodeURIComponent(m.model)}` : base,
    breakerKey: `provider:${p.tenantId ?? ''}:${p.id}`,
    provider: {
      headers: { ...p.headers, ...(azure ? { 'api-key': credential } : { authorization: `Bearer ${credential}` }) },
      model: m.model,
      query: azure && p.apiVersion ? `?api-version=${encodeURIComponent(p.apiVersion)}` : '',
    },
  };
}

/**
 * Reads providers and provider routes and opens their credentials, for a route table refresh. A provider whose
 * credential does not open (its KEK gone) is left out, with a warning that names the provider only.
 */
export async function loadProviderTargets(
  deps: GatewayProviders,
  logger: Pick<Logger, 'warn'>,
): Promise<ProviderTargets[]> {
  const snap = await deps.store.snapshot();
  if (snap.routes.length === 0) return [];
  const byOwner = new Map<string, { provider: Provider; credential: string }>();
  for (const p of snap.providers) {
    try {
      const credential = await deps.vault.open(p.credential, credentialContext(p));
      byOwner.set(`${p.tenantId ?? ''}\0${p.id}`, { provider: p, credential });
    } catch (err) {
      logger.warn({ provider: providerRef(p), tenantId: p.tenantId, err: (err as Error).message }, 'provider skipped');
    }
  }
  const target = (tenantId: string, modelId: string, ref: string | null): Upstream | null => {
    if (ref === null) return null;
    const key = ref.startsWith(PLATFORM_PREFIX) ? `\0${ref.slice(PLATFORM_PREFIX.length)}` : `${tenantId}\0${ref}`;
    const found = byOwner.get(key);
    return found ? (providerUpstream(found.provider, found.credential, modelId) ?? null) : null;
  };
  return snap.routes.map((r) => ({
    tenantId: r.tenantId,
    modelId: r.modelId,
    stable: target(r.tenantId, r.modelId, r.stable),
    canary: target(r.tenantId, r.modelId, r.canary),
    canaryWeight: r.canaryWeight,
    fallbacks: r.fallbacks.map((f) => target(r.tenantId, r.modelId, f)).filter((u): u is Upstream => u !== null),
  }));
}

/**
 * Recent latency (exponentially weighted, to the first byte) per target, as this replica saw it. A target not yet
 * seen counts as 0, so each is tried once before the strategy settles.
 */
export class LatencyBoard {
  private readonly ms = new Map<string, number>();

  constructor(private readonly alpha = 0.3) {}

  observe(u: Upstream, ms: number): void {
    const key = `${u.breakerKey}\0${u.version}`;
    const prev = this.ms.get(key);
    this.ms.set(key, prev === undefined ? ms : prev + this.alpha * (ms - prev));
  }

  of(u: Upstream): number {
    return this.ms.get(`${u.breakerKey}\0${u.version}`) ?? 0;
  }
}

/** A target's price per million tokens, as the price table gives it for the version it is metered under. */
export type TargetPrice = (u: Upstream) => Pick<Price, 'currency' | 'inputPerMillion' | 'outputPerMillion'> | undefined;

/**
 * `cost`: the target whose price-table price makes this request cheapest (tokens as reserved), the same price usage
 * and budgets are charged at; amounts compare only in the currency of the first priced target, so a target without a
 * price, or priced in another currency, ranks last. `latency`: the lowest recent latency. Among the healthy targets
 * (circuit closed) if any; ties go to the declared order (stable first).
 */
export function pickByStrategy(
  targets: Upstream[],
  strategy: 'cost' | 'latency',
  healthy: (u: Upstream) => boolean,
  board: LatencyBoard,
  tokens: { prompt: number; completion: number },
  priceOf: TargetPrice,
): Upstream {
  const usable = targets.filter(healthy);
  const pool = usable.length ? usable : targets;
  let score = (u: Upstream): number => board.of(u);
  if (strategy === 'cost') {
    const prices = new Map(pool.map((u) => [u, priceOf(u)]));
    const currency = [...prices.values()].find((p) => p !== undefined)?.currency;
    score = (u) => {
      const p = prices.get(u);
      return p && p.currency === currency
        ? p.inputPerMillion * tokens.prompt + p.outputPerMillion * tokens.completion
        : Number.POSITIVE_INFINITY;
    };
  }
  let best = pool[0]!;
  for (const u of pool) if (score(u) < score(best)) best = u;
  return best;
}
