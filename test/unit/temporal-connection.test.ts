import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from '@jest/globals';
import { ConfigError, loadConfig } from '../../common/config';
import { describeTemporalTarget, temporalConnectionOptions } from '../../common/temporal-connection';

const dir = mkdtempSync(path.join(tmpdir(), 'temporal-tls-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const file = (name: string, text: string) => {
  const p = path.join(dir, name);
  writeFileSync(p, text);
  return p;
};
const CA = file('ca.pem', '-----BEGIN CERTIFICATE-----\nY2E=\n-----END CERTIFICATE-----\n');
const CRT = file('client.pem', '-----BEGIN CERTIFICATE-----\nY2xpZW50\n-----END CERTIFICATE-----\n');
const KEY_SECRET = 'c2VjcmV0LWtleS1tYXRlcmlhbA';
const KEY = file('client.key', `-----BEGIN EC PRIVATE KEY-----\n${KEY_SECRET}\n-----END EC PRIVATE KEY-----\n`);

const options = (env: Record<string, string>) =>
  temporalConnectionOptions(
    loadConfig({ DATABASE_URL: 'postgres://db/llmhub', TEMPORAL_ADDRESS: 'tmprl:7233', ...env }),
  );
const failure = (fn: () => unknown): ConfigError => {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error('expected a configuration error');
};

describe('Temporal connection settings', () => {
  it('is plaintext with nothing set, as the dev server wants', () => {
    expect(options({})).toEqual({ address: 'tmprl:7233', tls: false });
  });

  it('turns TLS on for an API key, as Temporal Cloud needs', () => {
    expect(options({ TEMPORAL_API_KEY: 'k' })).toEqual({ address: 'tmprl:7233', tls: {}, apiKey: 'k' });
    expect(options({ TEMPORAL_TLS: 'true' })).toEqual({ address: 'tmprl:7233', tls: {} });
  });

  it('checks the server against the server name and the CA, and presents the client certificate', () => {
    expect(options({ TEMPORAL_TLS_SERVER_NAME: 'temporal.internal' }).tls).toEqual({
      serverNameOverride: 'temporal.internal',
    });
    const mtls = options({
      TEMPORAL_TLS_CA_FILE: CA,
      TEMPORAL_TLS_CERT_FILE: CRT,
      TEMPORAL_TLS_KEY_FILE: KEY,
      TEMPORAL_TLS_SERVER_NAME: 'temporal.internal',
    });
    expect(mtls.tls).toEqual({
      serverRootCACertificate: Buffer.from(`-----BEGIN CERTIFICATE-----\nY2E=\n-----END CERTIFICATE-----\n`),
      clientCertPair: {
        crt: Buffer.from('-----BEGIN CERTIFICATE-----\nY2xpZW50\n-----END CERTIFICATE-----\n'),
        key: Buffer.from(`-----BEGIN EC PRIVATE KEY-----\n${KEY_SECRET}\n-----END EC PRIVATE KEY-----\n`),
      },
      serverNameOverride: 'temporal.internal',
    });
    expect(mtls.apiKey).toBeUndefined();
  });

  it('refuses a certificate without its key, a key without its certificate, and TLS off with TLS settings or a key', () => {
    expect(failure(() => options({ TEMPORAL_TLS_CERT_FILE: CRT })).message).toMatch(
      /TEMPORAL_TLS_KEY_FILE: required with TEMPORAL_TLS_CERT_FILE/,
    );
    expect(failure(() => options({ TEMPORAL_TLS_KEY_FILE: KEY })).message).toMatch(
      /TEMPORAL_TLS_CERT_FILE: required with TEMPORAL_TLS_KEY_FILE/,
    );
    expect(failure(() => options({ TEMPORAL_TLS: 'false', TEMPORAL_TLS_CA_FILE: CA })).message).toMatch(
      /TEMPORAL_TLS: false, but TEMPORAL_TLS_CA_FILE need TLS/,
    );
    // Never an API key in plaintext.
    const plainKey = failure(() => options({ TEMPORAL_TLS: 'false', TEMPORAL_API_KEY: 'tmprl-secret-key' }));
    expect(plainKey.message).toMatch(/TEMPORAL_TLS: false, but TEMPORAL_API_KEY need TLS/);
    expect(plainKey.message).not.toContain('tmprl-secret-key');
  });

  it('names the variable and the path of a file it cannot read or that holds no PEM, never its contents', () => {
    const missing = path.join(dir, 'nope.key');
    const gone = failure(() => options({ TEMPORAL_TLS_CERT_FILE: CRT, TEMPORAL_TLS_KEY_FILE: missing }));
    expect(gone.message).toContain(`TEMPORAL_TLS_KEY_FILE: cannot read ${missing} (ENOENT)`);
    const swapped = failure(() => options({ TEMPORAL_TLS_CERT_FILE: KEY, TEMPORAL_TLS_KEY_FILE: CRT }));
    expect(swapped.message).toContain(`TEMPORAL_TLS_CERT_FILE: ${KEY} holds no PEM certificate`);
    expect(swapped.message).not.toContain(KEY_SECRET);
    const notPem = file('raw.key', KEY_SECRET);
    const raw = failure(() => options({ TEMPORAL_TLS_CERT_FILE: CRT, TEMPORAL_TLS_KEY_FILE: notPem }));
    expect(raw.message).toContain(`TEMPORAL_TLS_KEY_FILE: ${notPem} holds no PEM private key`);
    expect(raw.message).not.toContain(KEY_SECRET);
    if (process.getuid?.() !== 0) {
      const locked = file('locked.pem', '-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n');
      chmodSync(locked, 0o000);
      expect(failure(() => options({ TEMPORAL_TLS_CA_FILE: locked })).message).toContain(
        `TEMPORAL_TLS_CA_FILE: cannot read ${locked} (EACCES)`,
      );
    }
  });

  it('describes the target for error messages without the API key', () => {
    const described = describeTemporalTarget(
      options({
        TEMPORAL_API_KEY: 'tmprl-secret-key',
        TEMPORAL_TLS_SERVER_NAME: 'ns.acct.tmprl.cloud',
        TEMPORAL_TLS_CERT_FILE: CRT,
        TEMPORAL_TLS_KEY_FILE: KEY,
      }),
    );
    expect(described).toBe('tmprl:7233 over TLS (server name ns.acct.tmprl.cloud, client certificate, API key)');
    expect(describeTemporalTarget(options({}))).toBe('tmprl:7233 without TLS');
  });
});
