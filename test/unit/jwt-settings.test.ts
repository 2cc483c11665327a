import { describe, expect, it } from '@jest/globals';
import { createLocalJWKSet } from 'jose';
import { checkJwtSettings } from '../../api/plugins/auth';

describe('JWT settings', () => {
  const jwks = createLocalJWKSet({ keys: [] });

  it('needs nothing while JWTs are off', () => {
    expect(() => checkJwtSettings({})).not.toThrow();
  });

  it('refuses a key set without an issuer or an audience', () => {
    expect(() => checkJwtSettings({ jwks, audience: 'llmhub' })).toThrow(/JWT_ISSUER is required/);
    expect(() => checkJwtSettings({ jwks, issuer: 'https://idp' })).toThrow(/JWT_AUDIENCE is required/);
    expect(() => checkJwtSettings({ jwksUrl: 'https://idp/jwks', issuer: 'https://idp' })).toThrow(/JWT_AUDIENCE/);
  });

  it('fetches keys over https, plain http only from loopback', () => {
    const base = { issuer: 'https://idp', audience: 'llmhub' };
    expect(() => checkJwtSettings({ ...base, jwksUrl: 'https://idp.example/jwks' })).not.toThrow();
    for (const url of ['http://127.0.0.1:9000/jwks', 'http://localhost/jwks', 'http://[::1]:8080/jwks']) {
      expect(() => checkJwtSettings({ ...base, jwksUrl: url })).not.toThrow();
    }
    for (const url of ['http://idp.example/jwks', 'http://10.0.0.5/jwks', 'http://127.0.0.1.evil.example/jwks']) {
      expect(() => checkJwtSettings({ ...base, jwksUrl: url })).toThrow(/must use https/);
    }
  });
});
