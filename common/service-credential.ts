import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Pool } from 'pg';

/** Credentials the worker mints for a batch's gateway calls: `llmhubsvc_<payload>.<mac>`, a prefix no key has. */
export const SERVICE_CREDENTIAL_PREFIX = 'llmhubsvc';
const SECRET_NAME = 'batch-gateway';
/** Long enough for a page's lines, short enough that one read from a log is soon worth nothing. */
export const SERVICE_CREDENTIAL_TTL_MS = 15 * 60_000;

/** Who a batch's gateway calls act as: its creator's subject and roles, within its tenant; no key material. */
export interface ServiceClaims {
  tenantId: string;
  subject: string;
  roles: string[];
  batchId: string;
  /** Epoch ms. */
  exp: number;
}

/**
 * Signs and verifies service credentials with an HMAC key the roles share through PostgreSQL (made on first use), so
 * no install has to configure one, and only what can read the platform's database can mint one.
 */
export class ServiceCredentials {
  private secret?: Promise<Buffer>;

  constructor(private readonly db: Pool) {}

  private key(): Promise<Buffer> {
    this.secret ??= (async () => {
      await this.db.query('INSERT INTO service_secrets (name, secret) VALUES ($1, $2) ON CONFLICT DO NOTHING', [
        SECRET_NAME,
        randomBytes(32),
      ]);
      const { rows } = await this.db.query<{ secret: Buffer }>('SELECT secret FROM service_secrets WHERE name = $1', [
        SECRET_NAME,
      ]);
      return rows[0]!.secret;
    })();
    this.secret.catch(() => (this.secret = undefined));
    return this.secret;
  }

  async mint(claims: Omit<ServiceClaims, 'exp'>, now = Date.now()): Promise<string> {
    const payload = Buffer.from(JSON.stringify({ ...claims, exp: now + SERVICE_CREDENTIAL_TTL_MS })).toString(
      'base64url',
    );
    const mac = createHmac('sha256', await this.key())
      .update(payload)
      .digest('base64url');
    return `${SERVICE_CREDENTIAL_PREFIX}_${payload}.${mac}`;
  }

  /** The claims of a credential this platform signed and that has not expired; undefined for anything else. */
  async verify(token: string, now = Date.now()): Promise<ServiceClaims | undefined> {
    const m = /^llmhubsvc_([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]{43})$/.exec(token);
    if (!m) return undefined;
    const expected = createHmac('sha256', await this.key())
      .update(m[1]!)
      .digest();
    const given = Buffer.from(m[2]!, 'base64url');
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return undefined;
    const claims = JSON.parse(Buffer.from(m[1]!, 'base64url').toString('utf8')) as ServiceClaims;
    return claims.exp > now ? claims : undefined;
  }
}
