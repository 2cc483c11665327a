import type { Pool } from 'pg';
import { cursorTime, KeyPart, keysetPage, type Keyset, type Page, type PageQuery } from './pages';

/** The tenant_id of a platform operators' price: it applies to every tenant and wins over a tenant's own. */
export const PLATFORM_PRICE = '';

export interface Price {
  /** PLATFORM_PRICE ('') for the platform's. */
  tenantId: string;
  modelId: string;
  /** '' for every version of the model without a price of its own. */
  version: string;
  /** ISO time from which the price applies (until the next one of the same model and version). */
  effectiveFrom: string;
  currency: string;
  inputPerMillion: number;
  outputPerMillion: number;
}

export const PRICE_KEYS: Keyset<Price> = {
  list: 'prices',
  parts: [KeyPart.text, KeyPart.text, KeyPart.text, KeyPart.time],
  keyOf: (p) => [p.tenantId, p.modelId, p.version, p.effectiveFrom],
};

/**
 * The price of each usage row at the minute it was metered, and its cost: the platform's price before the tenant's,
 * a version's own before the model's, the latest one in effect by the minute's end (usage is metered per minute, and
 * the gateway charges a budget by a new price from the moment it is in effect). The usage report and the budget
 * alerts read cost through this alone, so they cannot disagree.
 */
export const PRICED_USAGE = `
  SELECT u.*, pr.currency,
         (u.prompt_tokens * pr.input_per_million + u.completion_tokens * pr.output_per_million) / 1000000 AS cost
  FROM gateway_usage u
  LEFT JOIN LATERAL (
    SELECT p.currency, p.input_per_million, p.output_per_million FROM model_prices p
    WHERE p.model_id = u.model_id AND p.version IN ('', u.version) AND p.tenant_id IN ('', u.tenant_id)
      AND p.effective_from < u.minute + interval '1 minute'
    ORDER BY (p.tenant_id = '') DESC, (p.version <> '') DESC, p.effective_from DESC LIMIT 1
  ) pr ON true`;

interface PriceRow {
  tenant_id: string;
  model_id: string;
  version: string;
  effective_from: string;
  currency: string;
  input_per_million: string;
  output_per_million: string;
}
const COLUMNS = `tenant_id, model_id, version, ${cursorTime('effective_from')} AS effective_from, currency,
  input_per_million, output_per_million`;
const priceOf = (r: PriceRow): Price => ({
  tenantId: r.tenant_id,
  modelId: r.model_id,
  version: r.version,
  effectiveFrom: r.effective_from,
  currency: r.currency,
  inputPerMillion: Number(r.input_per_million),
  outputPerMillion: Number(r.output_per_million),
});

/** Model prices of the platform (for all tenants) and of each tenant (for itself). */
export class PriceStore {
  constructor(private readonly db: Pool) {}

  /** Sets (or replaces) the price of a model version from a time on; returns it as stored. */
  async setPrice(p: Omit<Price, 'effectiveFrom'> & { effectiveFrom: Date }): Promise<Price> {
    const { rows } = await this.db.query<PriceRow>(
      `INSERT INTO model_prices (tenant_id, model_id, version, effective_from, currency, input_per_million, output_per_million)
       VALUES ($1, $2, $3, $4, $5, $6, $7)
       ON CONFLICT (tenant_id, model_id, version, effective_from) DO UPDATE SET currency = EXCLUDED.currency,
         input_per_million = EXCLUDED.input_per_million, output_per_million = EXCLUDED.output_per_million
       RETURNING ${COLUMNS}`,
      [p.tenantId, p.modelId, p.version, p.effectiveFrom, p.currency, p.inputPerMillion, p.outputPerMillion],
    );
    return priceOf(rows[0]!);
  }

  /** False when there was no such price. */
  async removePrice(tenantId: string, modelId: string, version: string, effectiveFrom: Date): Promise<boolean> {
    const { rowCount } = await this.db.query(
      'DELETE FROM model_prices WHERE tenant_id = $1 AND model_id = $2 AND version = $3 AND effective_from = $4',
      [tenantId, modelId, version, effectiveFrom],
    );
    return rowCount === 1;
  }

  /** A page of the prices of these owners ('' the platform's), by owner, model, version and time. */
  async listPrices(owners: string[], q: PageQuery): Promise<Page<Price>> {
    return keysetPage(PRICE_KEYS, q, async (after, take) => {
      const { rows } = await this.db.query<PriceRow>(
        `SELECT ${COLUMNS} FROM model_prices
         WHERE tenant_id = ANY($1) AND ($2::text IS NULL OR (tenant_id, model_id, version, ${cursorTime('effective_from')}) > ($2, $3, $4, $5))
         ORDER BY tenant_id, model_id, version, effective_from LIMIT $6`,
        [owners, after?.[0] ?? null, after?.[1] ?? null, after?.[2] ?? null, after?.[3] ?? null, take],
      );
      return rows.map(priceOf);
    });
  }

  /** The prices in effect now, every owner's: what a gateway replica keeps in memory. */
  async current(q: Pick<Pool, 'query'> = this.db): Promise<Price[]> {
    const { rows } = await q.query<PriceRow>(
      `SELECT DISTINCT ON (tenant_id, model_id, version) ${COLUMNS} FROM model_prices
       WHERE effective_from <= now() ORDER BY tenant_id, model_id, version, effective_from DESC`,
    );
    return rows.map(priceOf);
  }
}
