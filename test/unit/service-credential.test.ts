import { describe, expect, it } from '@jest/globals';
import type { Pool } from 'pg';
import { SERVICE_CREDENTIAL_TTL_MS, ServiceCredentials } from '../../common/service-credential';

/** The one query pair ServiceCredentials makes: store the secret once, read it back. */
function secretTable(): Pool {
  let secret: Buffer | undefined;
  return {
    query: async (sql: string, params: unknown[]) => {
      if (sql.startsWith('INSERT')) secret ??= params[1] as Buffer;
      return { rows: secret ? [{ secret }] : [] };
    },
  } as unknown as Pool;
}

const claims = { tenantId: 'acme', subject: 'key:k1', roles: ['developer'], batchId: 'batch_1' };

describe('ServiceCredentials', () => {
  it('verifies what it minted, with the shared secret, until it expires', async () => {
    const db = secretTable();
    const token = await new ServiceCredentials(db).mint(claims, 1_000);
    expect(token).toMatch(/^llmhubsvc_/);
    // Another role's instance reads the same secret from the database.
    const other = new ServiceCredentials(db);
    expect(await other.verify(token, 2_000)).toMatchObject(claims);
    expect(await other.verify(token, 1_000 + SERVICE_CREDENTIAL_TTL_MS)).toBeUndefined();
  });

  it('refuses a changed payload, a forged mac and another secret', async () => {
    const db = secretTable();
    const creds = new ServiceCredentials(db);
    const token = await creds.mint(claims);
    const [payload, mac] = token.slice('llmhubsvc_'.length).split('.') as [string, string];
    const widened = Buffer.from(JSON.stringify({ ...claims, tenantId: 'other', exp: Date.now() + 60_000 })).toString(
      'base64url',
    );
    expect(await creds.verify(`llmhubsvc_${widened}.${mac}`)).toBeUndefined();
    expect(await creds.verify(`llmhubsvc_${payload}.${'A'.repeat(43)}`)).toBeUndefined();
    expect(await new ServiceCredentials(secretTable()).verify(token)).toBeUndefined();
    expect(await creds.verify('llmhubsvc_garbage')).toBeUndefined();
  });
});
