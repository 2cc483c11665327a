import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Pool } from 'pg';
import type { Role } from '../../contracts/approvals';

const KEY_PREFIX = 'llmhub';

export interface ApiKeyRecord {
  id: string;
  tenantId: string;
  name: string;
  role: Role;
  revoked: boolean;
}

/** What a tenant's admin may see of a key: never the secret or its hash. */
export interface ApiKeyInfo {
  id: string;
  name: string;
  role: Role;
  createdAt: string;
  revokedAt: string | null;
}

const hashSecret = (secret: string): Buffer => createHash('sha256').update(secret).digest();

/**
 * Keys look like `llmhub_<id>_<secret>`: the id finds the row, only a hash of the secret is stored,
 * and the full key is returned once at creation.
 */
export function splitApiKey(token: string): { id: string; secret: string } | undefined {
  const m = /^llmhub_([a-z0-9]{16})_([A-Za-z0-9_-]{43})$/.exec(token);
  return m ? { id: m[1]!, secret: m[2]! } : undefined;
}

export class TenantStore {
  constructor(private readonly db: Pool) {}

  async createTenant(id: string, name: string): Promise<void> {
    await this.db.query('INSERT INTO tenants (id, name) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING', [id, name]);
  }

  async tenantExists(id: string): Promise<boolean> {
    return (await this.db.query('SELECT 1 FROM tenants WHERE id = $1', [id])).rowCount === 1;
  }

  async createApiKey(tenantId: string, name: string, role: Role): Promise<{ id: string; key: string }> {
    const id = randomBytes(8).toString('hex');
    const secret = randomBytes(32).toString('base64url');
    await this.db.query('INSERT INTO api_keys (id, tenant_id, name, role, secret_hash) VALUES ($1, $2, $3, $4, $5)', [
      id,
      tenantId,
      name,
      role,
      hashSecret(secret),
    ]);
    return { id, key: `${KEY_PREFIX}_${id}_${secret}` };
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

  async listApiKeys(tenantId: string): Promise<ApiKeyInfo[]> {
    return this.apiKeyInfos('WHERE tenant_id = $1 ORDER BY created_at, id', [tenantId]);
  }

  async getApiKey(tenantId: string, id: string): Promise<ApiKeyInfo | undefined> {
    return (await this.apiKeyInfos('WHERE tenant_id = $1 AND id = $2', [tenantId, id]))[0];
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
    }>('SELECT id, tenant_id, name, role, secret_hash, revoked_at FROM api_keys WHERE id = $1', [parts.id]);
    const row = rows[0];
    if (!row || !timingSafeEqual(row.secret_hash, hashSecret(parts.secret))) return undefined;
    return { id: row.id, tenantId: row.tenant_id, name: row.name, role: row.role, revoked: row.revoked_at !== null };
  }

  private async apiKeyInfos(where: string, params: unknown[]): Promise<ApiKeyInfo[]> {
    const { rows } = await this.db.query<{
      id: string;
      name: string;
      role: Role;
      created_at: Date;
      revoked_at: Date | null;
    }>(`SELECT id, name, role, created_at, revoked_at FROM api_keys ${where}`, params);
    return rows.map((r) => ({
      id: r.id,
      name: r.name,
      role: r.role,
      createdAt: r.created_at.toISOString(),
      revokedAt: r.revoked_at?.toISOString() ?? null,
    }));
  }
}
