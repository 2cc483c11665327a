import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Pool } from 'pg';
import type { Role } from '../../contracts/approvals';
import { cursorTime, KeyPart, keysetPage, type Keyset, type Page, type PageQuery } from './pages';
import { inTransaction } from './pool';

const KEY_PREFIX = 'llmhub';
/** Platform operators' keys: `llmhubop_<id>_<secret>`, a prefix no tenant key has. */
export const PLATFORM_KEY_PREFIX = 'llmhubop';

export interface ApiKeyRecord {
  id: string;
  tenantId: string;
  name: string;
  role: Role;
  revoked: boolean;
  /** Epoch ms; null for a key that never expires. Checked at every request, so a cached verdict cannot outlive it. */
  expiresAt: number | null;
  tenantSuspended: boolean;
}

/** A platform operator's key: no tenant, one role (`platform-admin`). */
export interface PlatformKeyRecord {
  id: string;
  name: string;
  revoked: boolean;
  expiresAt: number | null;
}

export interface TenantInfo {
  id: string;
  name: string;
  createdAt: string;
  suspendedAt: string | null;
}

/** Whether a tenant exists and may act: what tokens and keys are checked against. */
export type TenantState = 'active' | 'suspended' | 'absent';

/** What a tenant's admin may see of a key: never the secret or its hash. */
export interface ApiKeyInfo {
  id: string;
  name: string;
  role: Role;
  createdAt: string;
  revokedAt: string | null;
  expiresAt: string | null;
}

interface ApiKeyRow {
  id: string;
  name: string;
  role: Role;
  created_at: Date;
  created_key: string;
  revoked_at: Date | null;
  expires_at: Date | null;
}
const toApiKey = (r: ApiKeyRow): ApiKeyInfo => ({
  id: r.id,
  name: r.name,
  role: r.role,
  createdAt: r.created_at.toISOString(),
  revokedAt: r.revoked_at?.toISOString() ?? null,
  expiresAt: r.expires_at?.toISOString() ?? null,
});
export const API_KEY_KEYS: Keyset<ApiKeyRow> = {
  list: 'api-keys',
  parts: [KeyPart.time, KeyPart.text],
  keyOf: (r) => [r.created_key, r.id],
};
export const TENANT_KEYS: Keyset<TenantInfo> = { list: 'tenants', parts: [KeyPart.text], keyOf: (t) => [t.id] };

const hashSecret = (secret: string): Buffer => createHash('sha256').update(secret).digest();

/**
 * Keys look like `llmhub_<id>_<secret>`: the id finds the row, only a hash of the secret is stored,
 * and the full key is returned once at creation.
 */
export function splitApiKey(token: string, prefix = KEY_PREFIX): { id: string; secret: string } | undefined {
  const m = /^([a-z]+)_([a-z0-9]{16})_([A-Za-z0-9_-]{43})$/.exec(token);
  return m && m[1] === prefix ? { id: m[2]!, secret: m[3]! } : undefined;
}

function newKey(prefix: string): { id: string; key: string; hash: Buffer } {
  const id = randomBytes(8).toString('hex');
  const secret = randomBytes(32).toString('base64url');
  return { id, key: `${prefix}_${id}_${secret}`, hash: hashSecret(secret) };
}

const epochMs = (d: Date | null): number | null => (d === null ? null : d.getTime());

export class TenantStore {
  constructor(private readonly db: Pool) {}

  async createTenant(id: string, name: string): Promise<void> {
    await this.db.query('INSERT INTO tenants (id, name) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING', [id, name]);
  }

  async tenantState(id: string): Promise<TenantState> {
    const { rows } = await this.db.query<{ suspended_at: Date | null }>(
      'SELECT suspended_at FROM tenants WHERE id = $1',
      [id],
    );
    if (!rows[0]) return 'absent';
    return rows[0].suspended_at === null ? 'active' : 'suspended';
  }

  async tenantExists(id: string): Promise<boolean> {
    return (await this.tenantState(id)) !== 'absent';
  }

  async listTenants(q: PageQuery): Promise<Page<TenantInfo>> {
    return keysetPage(TENANT_KEYS, q, (after, take) =>
      this.tenantInfos('WHERE $1::text IS NULL OR id > $1 ORDER BY id LIMIT $2', [after?.[0] ?? null, take]),
    );
  }

  async getTenant(id: string): Promise<TenantInfo | undefined> {
    return (await this.tenantInfos('WHERE id = $1', [id]))[0];
  }

  /** Suspends or resumes; false for an unknown tenant. The update notifies every replica to drop cached verdicts. */
  async setSuspended(id: string, suspended: boolean): Promise<boolean> {
    const { rowCount } = await this.db.query(
      `UPDATE tenants SET suspended_at = ${suspended ? 'COALESCE(suspended_at, now())' : 'NULL'} WHERE id = $1`,
      [id],
    );
    return rowCount === 1;
  }

  async createApiKey(
    tenantId: string,
    name: string,
    role: Role,
    expiresAt: Date | null = null,
  ): Promise<{ id: string; key: string }> {
    const { id, key, hash } = newKey(KEY_PREFIX);
    await this.db.query(
      'INSERT INTO api_keys (id, tenant_id, name, role, secret_hash, expires_at) VALUES ($1, $2, $3, $4, $5, $6)',
      [id, tenantId, name, role, hash, expiresAt],
    );
    return { id, key };
  }

  async createPlatformKey(name: string, expiresAt: Date | null = null): Promise<{ id: string; key: string }> {
    const { id, key, hash } = newKey(PLATFORM_KEY_PREFIX);
    await this.db.query('INSERT INTO platform_api_keys (id, name, secret_hash, expires_at) VALUES ($1, $2, $3, $4)', [
      id,
      name,
      hash,
      expiresAt,
    ]);
    return { id, key };
  }

  async revokePlatformKey(id: string): Promise<boolean> {
    const { rowCount } = await this.db.query(
      'UPDATE platform_api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE id = $1',
      [id],
    );
    return rowCount === 1;
  }

  async verifyPlatformKey(token: string): Promise<PlatformKeyRecord | undefined> {
    const parts = splitApiKey(token, PLATFORM_KEY_PREFIX);
    if (!parts) return undefined;
    const { rows } = await this.db.query<{
      id: string;
      name: string;
      secret_hash: Buffer;
      revoked_at: Date | null;
      expires_at: Date | null;
    }>('SELECT id, name, secret_hash, revoked_at, expires_at FROM platform_api_keys WHERE id = $1', [parts.id]);
    const row = rows[0];
    if (!row || !timingSafeEqual(row.secret_hash, hashSecret(parts.secret))) return undefined;
    return { id: row.id, name: row.name, revoked: row.revoked_at !== null, expiresAt: epochMs(row.expires_at) };
  }

  async revokeApiKey(id: string): Promise<void> {
    await this.db.query('UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL', [id]);
  }

  /**
   * Revokes one key of the tenant (again revoking a revoked key keeps its first revocation time); false when the
   * tenant has no such key. The update fires the revocation notification (0002_gateway.sql) that evicts cached verdicts.
   */
  async revokeTenantApiKey(tenantId: string, id: string): Promise<boolean> {
    const { rowCount } = await this.db.query(
      'UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE id = $1 AND tenant_id = $2',
      [id, tenantId],
    );
    return rowCount === 1;
  }

  /** A page of the tenant's keys, oldest first. */
  async listApiKeys(tenantId: string, q: PageQuery): Promise<Page<ApiKeyInfo>> {
    const page = await keysetPage(API_KEY_KEYS, q, (after, take) =>
      this.apiKeyRows(
        `WHERE tenant_id = $1 AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3)) ORDER BY created_at, id LIMIT $4`,
        [tenantId, after?.[0] ?? null, after?.[1] ?? null, take],
      ),
    );
    return { items: page.items.map(toApiKey), nextCursor: page.nextCursor };
  }

  async getApiKey(tenantId: string, id: string): Promise<ApiKeyInfo | undefined> {
    return (await this.apiKeyRows('WHERE tenant_id = $1 AND id = $2', [tenantId, id])).map(toApiKey)[0];
  }

  /** Revokes a tenant's keys of one name made before `createdBeforeMs` (epoch ms): how machine-minted keys expire. */
  async revokeApiKeysNamed(tenantId: string, name: string, createdBeforeMs: number): Promise<number> {
    const { rowCount } = await this.db.query(
      'UPDATE api_keys SET revoked_at = now() WHERE tenant_id = $1 AND name = $2 AND created_at < to_timestamp($3 / 1000.0) AND revoked_at IS NULL',
      [tenantId, name, createdBeforeMs],
    );
    return rowCount ?? 0;
  }

  /** Returns the key's record when the token's secret matches; undefined for unknown ids and wrong secrets alike. */
  async verifyApiKey(token: string): Promise<ApiKeyRecord | undefined> {
    const parts = splitApiKey(token);
    if (!parts) return undefined;
    const { rows } = await this.db.query<{
      id: string;
      tenant_id: string;
      name: string;
      role: Role;
      secret_hash: Buffer;
      revoked_at: Date | null;
      expires_at: Date | null;
      suspended_at: Date | null;
    }>(
      `SELECT k.id, k.tenant_id, k.name, k.role, k.secret_hash, k.revoked_at, k.expires_at, t.suspended_at
       FROM api_keys k JOIN tenants t ON t.id = k.tenant_id WHERE k.id = $1`,
      [parts.id],
    );
    const row = rows[0];
    if (!row || !timingSafeEqual(row.secret_hash, hashSecret(parts.secret))) return undefined;
    return {
      id: row.id,
      tenantId: row.tenant_id,
      name: row.name,
      role: row.role,
      revoked: row.revoked_at !== null,
      expiresAt: epochMs(row.expires_at),
      tenantSuspended: row.suspended_at !== null,
    };
  }

  private async apiKeyRows(where: string, params: unknown[]): Promise<ApiKeyRow[]> {
    const { rows } = await this.db.query<ApiKeyRow>(
      `SELECT id, name, role, created_at, ${cursorTime('created_at')} AS created_key, revoked_at, expires_at FROM api_keys ${where}`,
      params,
    );
    return rows;
  }

  /**
   * Removes the tenant and every row that names it, children before parents (read from the schema's foreign keys,
   * so a table added later is covered too), in one transaction. The audit log stays: it is the platform's record.
   */
  async deleteTenant(id: string): Promise<boolean> {
    return inTransaction(this.db, async (c) => {
      const { rows: tables } = await c.query<{ table_name: string }>(
        `SELECT table_name FROM information_schema.columns
         WHERE table_schema = current_schema() AND column_name = 'tenant_id' AND table_name <> 'audit_log'`,
      );
      const { rows: refs } = await c.query<{ child: string; parent: string }>(
        `SELECT conrelid::regclass::text AS child, confrelid::regclass::text AS parent FROM pg_constraint
         WHERE contype = 'f' AND connamespace = current_schema()::regnamespace`,
      );
      const pending = new Set(tables.map((t) => t.table_name));
      while (pending.size > 0) {
        const leaves = [...pending].filter(
          (t) => !refs.some((r) => r.parent === t && r.child !== t && pending.has(r.child)),
        );
        if (leaves.length === 0)
          throw new Error(`tenant tables reference each other in a cycle: ${[...pending].join(', ')}`);
        for (const t of leaves) {
          await c.query(`DELETE FROM ${c.escapeIdentifier(t)} WHERE tenant_id = $1`, [id]);
          pending.delete(t);
        }
      }
      return (await c.query('DELETE FROM tenants WHERE id = $1', [id])).rowCount === 1;
    });
  }

  private async tenantInfos(where: string, params: unknown[]): Promise<TenantInfo[]> {
    const { rows } = await this.db.query<{ id: string; name: string; created_at: Date; suspended_at: Date | null }>(
      `SELECT id, name, created_at, suspended_at FROM tenants ${where}`,
      params,
    );
    return rows.map((r) => ({
      id: r.id,
      name: r.name,
      createdAt: r.created_at.toISOString(),
      suspendedAt: r.suspended_at?.toISOString() ?? null,
    }));
  }
}
