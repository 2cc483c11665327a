import type { Pool } from 'pg';
import type { CredentialVault, SealedCredential } from '../credentials';
import { KeyPart, keysetPage, type Keyset, type Page, type PageQuery } from './pages';
import type { Queryable } from './pool';

export const PROVIDER_KINDS = ['openai', 'azure'] as const;
export type ProviderKind = (typeof PROVIDER_KINDS)[number];

/** How a tenant names a platform operator's provider in a route; its own are named by bare id. */
export const PLATFORM_PREFIX = 'platform/';

export interface ProviderModel {
  /** The provider's model (Azure: the deployment name). */
  model: string;
}

export interface Provider {
  /** null: a platform operator's provider, usable by every tenant. */
  tenantId: string | null;
  id: string;
  kind: ProviderKind;
  baseUrl: string;
  apiVersion: string | null;
  headers: Record<string, string>;
  models: Record<string, ProviderModel>;
  credential: SealedCredential;
  createdAt: string;
}

export interface ProviderRoute {
  tenantId: string;
  modelId: string;
  stable: string | null;
  canary: string | null;
  canaryWeight: number;
  fallbacks: string[];
}

/** What a tenant route names a provider by: its id, or `platform/<id>` for an operator's. */
export const providerRef = (p: Pick<Provider, 'tenantId' | 'id'>): string =>
  p.tenantId === null ? `${PLATFORM_PREFIX}${p.id}` : p.id;

/** What routes, gateway metrics and rollouts call a provider's target: `provider:<ref>`. */
export const providerTarget = (ref: string): string => `provider:${ref}`;

/** Binds a sealed credential to its row (associated data), so it opens nowhere else. */
export const credentialContext = (p: Pick<Provider, 'tenantId' | 'id'>): string =>
  `provider:${p.tenantId ?? ''}:${p.id}`;

export const PROVIDER_KEYS: Keyset<Provider> = {
  list: 'providers',
  parts: [KeyPart.text],
  keyOf: (p) => [providerRef(p)],
};

const REF = `CASE WHEN tenant_id IS NULL THEN '${PLATFORM_PREFIX}' || id ELSE id END`;

const providerOf = (r: Record<string, unknown>): Provider => ({
  tenantId: r.tenant_id as string | null,
  id: r.id as string,
  kind: r.kind as ProviderKind,
  baseUrl: r.base_url as string,
  apiVersion: r.api_version as string | null,
  headers: r.headers as Record<string, string>,
  models: r.models as Record<string, ProviderModel>,
  credential: r.credential as SealedCredential,
  createdAt: (r.created_at as Date).toISOString(),
});

const routeOf = (r: Record<string, unknown>): ProviderRoute => ({
  tenantId: r.tenant_id as string,
  modelId: r.model_id as string,
  stable: r.stable as string | null,
  canary: r.canary as string | null,
  canaryWeight: r.canary_weight as number,
  fallbacks: r.fallbacks as string[],
});

/**
 * Providers and the gateway models routed to them. Every write notifies the gateway replicas (0017_providers.sql),
 * which read `all()` and `routes()` into memory; nothing on the request path reads this store.
 */
export class ProviderStore {
  constructor(private readonly db: Pool) {}

  /** False when the owner already has a provider of that id. */
  async create(p: Omit<Provider, 'createdAt'>): Promise<boolean> {
    const { rowCount } = await this.db.query(
      `INSERT INTO providers (tenant_id, id, kind, base_url, api_version, headers, models, credential)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING`,
      [
        p.tenantId,
        p.id,
        p.kind,
        p.baseUrl,
        p.apiVersion,
        JSON.stringify(p.headers),
        JSON.stringify(p.models),
        JSON.stringify(p.credential),
      ],
    );
    return rowCount === 1;
  }

  async get(tenantId: string | null, id: string): Promise<Provider | undefined> {
    const { rows } = await this.db.query(
      'SELECT * FROM providers WHERE tenant_id IS NOT DISTINCT FROM $1 AND id = $2',
      [tenantId, id],
    );
    return rows[0] ? providerOf(rows[0]) : undefined;
  }

  /** A tenant's view by route reference: its own by id, an operator's by `platform/<id>`. */
  resolve(tenantId: string, ref: string): Promise<Provider | undefined> {
    return ref.startsWith(PLATFORM_PREFIX)
      ? this.get(null, ref.slice(PLATFORM_PREFIX.length))
      : this.get(tenantId, ref);
  }

  /** `tenantId` null: the operators' providers; a tenant: its own and, after them by reference, the operators'. */
  async list(tenantId: string | null, q: PageQuery): Promise<Page<Provider>> {
    return keysetPage(PROVIDER_KEYS, q, async (after, take) => {
      const { rows } = await this.db.query(
        `SELECT * FROM providers WHERE (tenant_id IS NULL OR tenant_id = $1) AND ($2::boolean OR tenant_id IS NULL)
           AND ($3::text IS NULL OR ${REF} > $3) ORDER BY ${REF} LIMIT $4`,
        [tenantId, tenantId !== null, after?.[0] ?? null, take],
      );
      return rows.map(providerOf);
    });
  }

  /** The routes that name the provider (a provider in use is not deleted from under them). */
  async usedBy(p: Pick<Provider, 'tenantId' | 'id'>): Promise<ProviderRoute[]> {
    const ref = providerRef(p);
    const { rows } = await this.db.query(
      `SELECT * FROM provider_routes WHERE ($1::text IS NULL OR tenant_id = $1)
         AND (stable = $2 OR canary = $2 OR $2 = ANY (fallbacks)) ORDER BY tenant_id, model_id LIMIT 10`,
      [p.tenantId, ref],
    );
    return rows.map(routeOf);
  }

  async remove(tenantId: string | null, id: string): Promise<boolean> {
    const { rowCount } = await this.db.query(
      'DELETE FROM providers WHERE tenant_id IS NOT DISTINCT FROM $1 AND id = $2',
      [tenantId, id],
    );
    return rowCount === 1;
  }

  async setRoute(r: ProviderRoute, q: Queryable = this.db): Promise<void> {
    await q.query(
      `INSERT INTO provider_routes (tenant_id, model_id, stable, canary, canary_weight, fallbacks) VALUES ($1, $2, $3, $4, $5, $6)
       ON CONFLICT (tenant_id, model_id) DO UPDATE SET stable = EXCLUDED.stable, canary = EXCLUDED.canary,
         canary_weight = EXCLUDED.canary_weight, fallbacks = EXCLUDED.fallbacks, updated_at = now()`,
      [r.tenantId, r.modelId, r.stable, r.canary, r.canaryWeight, r.fallbacks],
    );
  }

  /**
   * Sets only the canary and its weight (a rollout's steps), creating the route (stable: the deployed one's) if there
   * is none; the stable and fallbacks a tenant set are left as they are.
   */
  async setCanary(tenantId: string, modelId: string, canary: string | null, canaryWeight: number): Promise<void> {
    await this.db.query(
      `INSERT INTO provider_routes (tenant_id, model_id, stable, canary, canary_weight, fallbacks) VALUES ($1, $2, NULL, $3, $4, '{}')
       ON CONFLICT (tenant_id, model_id) DO UPDATE SET canary = EXCLUDED.canary, canary_weight = EXCLUDED.canary_weight,
         updated_at = now()`,
      [tenantId, modelId, canary, canaryWeight],
    );
  }

  /** The canary becomes the stable, with no canary left (a rollout's promotion). */
  async promoteCanary(tenantId: string, modelId: string, provider: string): Promise<void> {
    await this.db.query(
      `INSERT INTO provider_routes (tenant_id, model_id, stable, canary, canary_weight, fallbacks) VALUES ($1, $2, $3, NULL, 0, '{}')
       ON CONFLICT (tenant_id, model_id) DO UPDATE SET stable = EXCLUDED.stable, canary = NULL, canary_weight = 0,
         updated_at = now()`,
      [tenantId, modelId, provider],
    );
  }

  async getRoute(tenantId: string, modelId: string): Promise<ProviderRoute | undefined> {
    const { rows } = await this.db.query('SELECT * FROM provider_routes WHERE tenant_id = $1 AND model_id = $2', [
      tenantId,
      modelId,
    ]);
    return rows[0] ? routeOf(rows[0]) : undefined;
  }

  async removeRoute(tenantId: string, modelId: string, q: Queryable = this.db): Promise<boolean> {
    const { rowCount } = await q.query('DELETE FROM provider_routes WHERE tenant_id = $1 AND model_id = $2', [
      tenantId,
      modelId,
    ]);
    return rowCount === 1;
  }

  /** Everything the gateway keeps in memory, in one repeatable-read snapshot. */
  async snapshot(): Promise<{ providers: Provider[]; routes: ProviderRoute[] }> {
    const c = await this.db.connect();
    try {
      await c.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
      const providers = (await c.query('SELECT * FROM providers')).rows.map(providerOf);
      const routes = (await c.query('SELECT * FROM provider_routes')).rows.map(routeOf);
      await c.query('COMMIT');
      return { providers, routes };
    } finally {
      c.release();
    }
  }

  /**
   * Re-wraps every data key not under the vault's primary KEK (key rotation). Each row is updated only if its
   * credential is still the one read, so a credential replaced meanwhile is left as it is. `stranded`: credentials
   * under a key the vault no longer has (they open nowhere; their providers must be registered again).
   */
  async rewrapAll(vault: CredentialVault): Promise<{ rewrapped: number; stranded: number }> {
    const { rows } = await this.db.query<{ tenant_id: string | null; id: string; credential: SealedCredential }>(
      'SELECT tenant_id, id, credential FROM providers',
    );
    return vault.rewrapEach(
      rows,
      (r) => r.credential,
      async (r, next) => {
        const { rowCount } = await this.db.query(
          `UPDATE providers SET credential = $3, updated_at = now()
           WHERE tenant_id IS NOT DISTINCT FROM $1 AND id = $2 AND credential = $4`,
          [r.tenant_id, r.id, JSON.stringify(next), JSON.stringify(r.credential)],
        );
        return rowCount === 1;
      },
    );
  }
}
