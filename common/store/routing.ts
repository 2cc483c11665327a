import type { Pool } from 'pg';
import { BudgetStore } from './budgets';
import { readLimits, type LimitRule } from './limits';
import { PriceStore, type Price } from './prices';
import { KeyPart, keysetPage, type Keyset, type Page, type PageQuery } from './pages';

/** Canary share of weighted traffic when a canary is set without a weight (the seed's 90/10 split). */
export const DEFAULT_CANARY_WEIGHT = 10;

export interface RouteSpec {
  stable: string;
  canary?: string | null;
  /** Percent (0-100) of weighted traffic for the canary. */
  canaryWeight?: number;
}

export interface ModelRoute {
  tenantId: string;
  modelId: string;
  stable: string;
  canary: string | null;
  canaryWeight: number;
  /** Base URL (…/v1) of each routed version's server; a version without one cannot take traffic. */
  endpoints: Record<string, string | null>;
  /** Each routed version's replica owner's state (served_versions); absent for a version no rollout recorded. */
  serving: Record<string, VersionServing>;
}

/** What a gateway needs to hold a version's requests while it is brought back (migration 0016). */
export interface VersionServing {
  /** Nothing runs (scaled to zero): requests wait for a wake-up. */
  cold: boolean;
  /** Bumped each time the version runs again. */
  warmEpoch: number;
}

export interface Project {
  id: string;
  name: string;
  createdAt: string;
}
export const PROJECT_KEYS: Keyset<Project> = { list: 'projects', parts: [KeyPart.text], keyOf: (p) => [p.id] };

/** Everything a gateway replica keeps in memory, read in one consistent snapshot. */
export interface GatewaySnapshot {
  routes: ModelRoute[];
  projects: { tenantId: string; id: string }[];
  limits: LimitRule[];
  /** Prices in effect now, for the cost a budget reserves and the cost metrics. */
  prices: Price[];
  /** Budgets as limit rules on their project ('' the whole tenant). */
  budgets: (LimitRule & { projectId: string })[];
}

/**
 * Which version of a model serves traffic, and where each version is served. The rollout workflow writes it;
 * every write notifies the gateway replicas (trigger in 0002_gateway.sql), which re-read `snapshot()`.
 */
export class RoutingStore {
  constructor(private readonly db: Pool) {}

  async setVersionEndpoint(
    tenantId: string,
    modelId: string,
    version: string,
    endpointUrl: string | null,
  ): Promise<void> {
    const res = await this.db.query(
      'UPDATE model_versions SET endpoint_url = $4, updated_at = now() WHERE tenant_id = $1 AND model_id = $2 AND version = $3',
      [tenantId, modelId, version, endpointUrl],
    );
    if (res.rowCount !== 1) throw new Error(`model version ${modelId}@${version} of tenant ${tenantId} does not exist`);
  }

  /** Sets stable, canary and weight together, so a replica never sees a canary with another route's weight. */
  async setRoute(tenantId: string, modelId: string, r: RouteSpec, q: Pick<Pool, 'query'> = this.db): Promise<void> {
    const canary = r.canary ?? null;
    const weight = canary === null ? 0 : (r.canaryWeight ?? DEFAULT_CANARY_WEIGHT);
    if (!Number.isInteger(weight) || weight < 0 || weight > 100)
      throw new RangeError(`canaryWeight must be an integer 0-100, got ${weight}`);
    await q.query(
      `INSERT INTO model_routes (tenant_id, model_id, stable_version, canary_version, canary_weight) VALUES ($1, $2, $3, $4, $5)
       ON CONFLICT (tenant_id, model_id) DO UPDATE SET stable_version = EXCLUDED.stable_version, canary_version = EXCLUDED.canary_version,
         canary_weight = EXCLUDED.canary_weight, updated_at = now()`,
      [tenantId, modelId, r.stable, canary, weight],
    );
  }

  async getRoute(tenantId: string, modelId: string): Promise<ModelRoute | undefined> {
    return (await this.routes('WHERE r.tenant_id = $1 AND r.model_id = $2', [tenantId, modelId]))[0];
  }

  /** False when the tenant already has a project of that id (it is left as it was). */
  async createProject(tenantId: string, id: string, name = id): Promise<boolean> {
    const { rowCount } = await this.db.query(
      'INSERT INTO projects (tenant_id, id, name) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING',
      [tenantId, id, name],
    );
    return rowCount === 1;
  }

  async listProjects(tenantId: string, q: PageQuery): Promise<Page<Project>> {
    return keysetPage(PROJECT_KEYS, q, (after, take) =>
      this.projects('WHERE tenant_id = $1 AND ($2::text IS NULL OR id > $2) ORDER BY id LIMIT $3', [
        tenantId,
        after?.[0] ?? null,
        take,
      ]),
    );
  }

  async getProject(tenantId: string, id: string): Promise<Project | undefined> {
    return (await this.projects('WHERE tenant_id = $1 AND id = $2', [tenantId, id]))[0];
  }

  private async projects(where: string, params: unknown[]): Promise<Project[]> {
    const { rows } = await this.db.query<{ id: string; name: string; created_at: Date }>(
      `SELECT id, name, created_at FROM projects ${where}`,
      params,
    );
    return rows.map((r) => ({ id: r.id, name: r.name, createdAt: r.created_at.toISOString() }));
  }

  async snapshot(): Promise<GatewaySnapshot> {
    const c = await this.db.connect();
    try {
      // One repeatable-read transaction, so routes, projects and limits come from the same moment.
      await c.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
      const routes = await this.routes('', [], c);
      const projects = (
        await c.query<{ tenant_id: string; id: string }>('SELECT tenant_id, id FROM projects')
      ).rows.map((p) => ({ tenantId: p.tenant_id, id: p.id }));
      const limits = await readLimits(c);
      const prices = await new PriceStore(this.db).current(c);
      const budgets = await new BudgetStore(this.db).rules(c);
      await c.query('COMMIT');
      return { routes, projects, limits, prices, budgets };
    } finally {
      c.release();
    }
  }

  private async routes(where: string, params: unknown[], q: Pick<Pool, 'query'> = this.db): Promise<ModelRoute[]> {
    const { rows } = await q.query<{
      tenant_id: string;
      model_id: string;
      stable_version: string;
      canary_version: string | null;
      canary_weight: number;
      stable_url: string | null;
      canary_url: string | null;
      stable_cold: boolean | null;
      stable_epoch: number | null;
      canary_cold: boolean | null;
      canary_epoch: number | null;
    }>(
      `SELECT r.tenant_id, r.model_id, r.stable_version, r.canary_version, r.canary_weight, s.endpoint_url AS stable_url, c.endpoint_url AS canary_url,
         ss.cold AS stable_cold, ss.warm_epoch AS stable_epoch, sc.cold AS canary_cold, sc.warm_epoch AS canary_epoch
       FROM model_routes r
       JOIN model_versions s ON s.tenant_id = r.tenant_id AND s.model_id = r.model_id AND s.version = r.stable_version
       LEFT JOIN model_versions c ON c.tenant_id = r.tenant_id AND c.model_id = r.model_id AND c.version = r.canary_version
       LEFT JOIN served_versions ss ON ss.tenant_id = r.tenant_id AND ss.model_id = r.model_id AND ss.version = r.stable_version
       LEFT JOIN served_versions sc ON sc.tenant_id = r.tenant_id AND sc.model_id = r.model_id AND sc.version = r.canary_version
       ${where}`,
      params,
    );
    return rows.map((r) => ({
      tenantId: r.tenant_id,
      modelId: r.model_id,
      stable: r.stable_version,
      canary: r.canary_version,
      canaryWeight: r.canary_weight,
      endpoints: {
        [r.stable_version]: r.stable_url,
        ...(r.canary_version ? { [r.canary_version]: r.canary_url } : {}),
      },
      serving: {
        ...(r.stable_cold === null ? {} : { [r.stable_version]: { cold: r.stable_cold, warmEpoch: r.stable_epoch! } }),
        ...(r.canary_version && r.canary_cold !== null
          ? { [r.canary_version]: { cold: r.canary_cold, warmEpoch: r.canary_epoch! } }
          : {}),
      },
    }));
  }
}
