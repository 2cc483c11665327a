import { describe, expect, it } from '@jest/globals';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { LatencyBoard, pickByStrategy, providerUpstream, type TargetPrice } from '../../api/gateway/providers';
import type { Upstream } from '../../api/gateway/route-table';
import { CredentialVault, KeyFileKeks, newKeyFile } from '../../common/credentials';
import type { Provider } from '../../common/store/providers';

const target = (version: string): Upstream => ({
  version,
  url: `http://127.0.0.1/${version}`,
  origin: 'http://127.0.0.1',
  basePath: `/${version}`,
  breakerKey: version,
});

describe('routing strategies', () => {
  // The price table's prices by version, as RouteTable.priceOf gives them: a provider's and a deployed version's alike.
  const table: Record<string, [number, number, string?]> = {
    'provider:cheap': [1, 2],
    'v-dear': [5, 10],
    'provider:in': [10, 1],
    'provider:yen': [0.001, 0.001, 'JPY'],
  };
  const priceOf: TargetPrice = (u) => {
    const p = table[u.version];
    return p && { inputPerMillion: p[0], outputPerMillion: p[1], currency: p[2] ?? 'USD' };
  };
  const cheap = target('provider:cheap');
  const dear = target('v-dear');
  const unpriced = target('unpriced');
  const tokens = { prompt: 100, completion: 100 };
  const pick = (ts: Upstream[], healthy: (u: Upstream) => boolean, t = tokens) =>
    pickByStrategy(ts, 'cost', healthy, new LatencyBoard(), t, priceOf).version;

  it('cost: the cheapest healthy target by the price table; unknown prices rank last; all unhealthy: the cheapest', () => {
    expect(pick([unpriced, dear, cheap], () => true)).toBe('provider:cheap');
    // A deployed version with a price is ranked as a provider target is.
    expect(pick([unpriced, dear, cheap], (u) => u !== cheap)).toBe('v-dear');
    expect(pick([unpriced, dear, cheap], () => false)).toBe('provider:cheap');
    // Output tokens weigh by their own price: a long answer can make the other target cheaper.
    expect(pick([target('provider:in'), cheap], () => true, { prompt: 1, completion: 1000 })).toBe('provider:in');
    // Amounts in another currency than the first priced target's are not compared: it ranks with the unpriced.
    expect(pick([dear, target('provider:yen')], () => true)).toBe('v-dear');
    expect(pick([unpriced, dear], () => true)).toBe('v-dear');
  });

  it('latency: each target is tried once, then the lowest recent latency wins', () => {
    const board = new LatencyBoard();
    const [a, b] = [target('a'), target('b')];
    expect(pickByStrategy([a, b], 'latency', () => true, board, tokens, priceOf).version).toBe('a');
    board.observe(a, 300);
    expect(pickByStrategy([a, b], 'latency', () => true, board, tokens, priceOf).version).toBe('b');
    board.observe(b, 20);
    expect(pickByStrategy([a, b], 'latency', () => true, board, tokens, priceOf).version).toBe('b');
    // b slows down: its recent average passes a's.
    for (let i = 0; i < 10; i++) board.observe(b, 1000);
    expect(pickByStrategy([a, b], 'latency', () => true, board, tokens, priceOf).version).toBe('a');
  });
});

describe('provider calls', () => {
  const provider = (kind: Provider['kind']): Provider => ({
    tenantId: 't1',
    id: 'p',
    kind,
    baseUrl: kind === 'azure' ? 'https://res.example.com' : 'https://api.example.com/v1/',
    apiVersion: kind === 'azure' ? '2024-10-21' : null,
    headers: { 'x-extra': '1' },
    models: { chat: { model: 'gpt-4o' } },
    credential: {} as Provider['credential'],
    createdAt: '',
  });

  it("OpenAI: bearer credential under the base URL's path; Azure: the deployment path, api-version and api-key", () => {
    const openai = providerUpstream(provider('openai'), 'sk-1', 'chat')!;
    expect(openai).toMatchObject({
      origin: 'https://api.example.com',
      basePath: '/v1',
      version: 'provider:p',
      provider: { headers: { 'x-extra': '1', authorization: 'Bearer sk-1' }, model: 'gpt-4o', query: '' },
    });
    const azure = providerUpstream(provider('azure'), 'az-1', 'chat')!;
    expect(azure).toMatchObject({
      basePath: '/openai/deployments/gpt-4o',
      provider: { headers: { 'api-key': 'az-1' }, query: '?api-version=2024-10-21' },
    });
    expect(azure.provider!.headers.authorization).toBeUndefined();
    expect(providerUpstream(provider('openai'), 'sk-1', 'unmapped')).toBeUndefined();
  });
});

describe('credential envelopes', () => {
  it('seals per credential, opens only in its context, and rewraps under a rotated key without touching the data', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'kek-'));
    const file = path.join(dir, 'keys.json');
    await writeFile(file, newKeyFile('k1'));
    const vault = new CredentialVault(new KeyFileKeks(file));
    const a = await vault.seal('sk-secret', 'provider:t1:p');
    const b = await vault.seal('sk-secret', 'provider:t1:p');
    expect(a.kek).toBe('k1');
    expect(a.wrappedKey).not.toBe(b.wrappedKey);
    expect(a.ciphertext).not.toBe(b.ciphertext);
    expect(JSON.stringify(a)).not.toContain('sk-secret');
    expect(await vault.open(a, 'provider:t1:p')).toBe('sk-secret');
    await expect(vault.open(a, 'provider:t2:p')).rejects.toThrow(/does not open/);

    // Rotation: k2 becomes primary beside k1; old envelopes still open, rewrap moves them, then k1 can go.
    const { keys } = JSON.parse(await readFile(file, 'utf8')) as {
      keys: Record<string, string>;
    };
    await writeFile(file, newKeyFile('k2', keys));
    expect(await vault.open(a, 'provider:t1:p')).toBe('sk-secret');
    const moved = (await vault.rewrap(a))!;
    expect(moved.kek).toBe('k2');
    expect(moved.ciphertext).toBe(a.ciphertext);
    expect(await vault.rewrap(moved)).toBeUndefined();
    const k2only = JSON.parse(await readFile(file, 'utf8')) as {
      keys: Record<string, string>;
    };
    await writeFile(file, JSON.stringify({ primary: 'k2', keys: { k2: k2only.keys.k2 } }));
    // A process started after the old key was dropped opens the rewrapped credential, and the old envelope no more.
    const restarted = new CredentialVault(new KeyFileKeks(file));
    expect(await restarted.open(moved, 'provider:t1:p')).toBe('sk-secret');
    await expect(restarted.open(a, 'provider:t1:p')).rejects.toThrow(/not in the key file/);
  });
});
