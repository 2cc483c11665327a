import http from 'node:http';
import net, { type AddressInfo, type LookupFunction } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from '@jest/globals';
import { EgressPolicy, egressRefusalIn } from '../../common/egress';
import { discoverTools } from '../../common/mcp';

/** Every socket connect this process starts, by host, and every connection made, by peer address. */
const connects: string[] = [];
const connected: string[] = [];
const realConnect = net.Socket.prototype.connect;
let server: http.Server;
let port: number;
let accepted = 0;
let redirectTo = '';
const policies: EgressPolicy[] = [];
const policy = (allow: string[] = [], lookup?: LookupFunction) => {
  const p = new EgressPolicy(allow, lookup);
  policies.push(p);
  return p;
};

beforeAll(async () => {
  net.Socket.prototype.connect = function (this: net.Socket, ...args: unknown[]) {
    // net.connect hands its normalized [options, callback] pair as the one argument.
    const o = (Array.isArray(args[0]) ? args[0][0] : args[0]) as { host?: string };
    connects.push(String(o.host));
    this.once('connect', () => connected.push(String(this.remoteAddress)));
    return (realConnect as (...a: unknown[]) => net.Socket).apply(this, args);
  } as typeof realConnect;
  server = http.createServer((req, res) => {
    if (req.url === '/redirect') return res.writeHead(307, { location: redirectTo }).end();
    if (req.url === '/mcp') return res.writeHead(500, { 'content-type': 'text/plain' }).end('SECRET-UPSTREAM-BODY');
    res.end('ok');
  });
  server.on('connection', () => accepted++);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
});
afterEach(() => {
  connects.length = 0;
  connected.length = 0;
  accepted = 0;
});
afterAll(async () => {
  net.Socket.prototype.connect = realConnect;
  await Promise.all(policies.map((p) => p.close()));
  await new Promise((resolve) => server.close(resolve));
});

const refusal = async (p: EgressPolicy, url: string) => egressRefusalIn(await p.fetch(url).catch((e: unknown) => e));

describe('MCP HTTP egress', () => {
  it('refuses loopback, metadata and private addresses before any socket connects', async () => {
    const p = policy();
    for (const url of [
      `http://127.0.0.1:${port}/`,
      `http://[::1]:${port}/`,
      `http://[::ffff:127.0.0.1]:${port}/`,
      'http://169.254.169.254/latest/meta-data/',
      'http://[fd00:ec2::254]/',
      'http://10.0.0.1/',
      'http://10.255.1.2:8080/',
      'http://172.16.0.1/',
      'http://192.168.1.1/',
      'http://100.64.0.1/',
      'http://0.0.0.0/',
    ]) {
      expect({ url, refused: (await refusal(p, url))?.message }).toEqual({
        url,
        refused: expect.stringMatching(/refused/),
      });
    }
    // Address literals are refused before a socket even exists.
    expect(connects).toEqual([]);
    expect(accepted).toBe(0);
  });

  it('refuses a host name that resolves to loopback, checked on the address the socket would connect to', async () => {
    expect(await refusal(policy(), `http://localhost:${port}/`)).toBeDefined();
    // A name this test resolves itself, as a rebinding DNS server would answer at connect time: a public address
    // next to loopback. Any refused address in the answer refuses the name.
    const rebinding = ((
      _host: string,
      _opts: object,
      cb: (e: null, a: { address: string; family: number }[]) => void,
    ) =>
      cb(null, [
        { address: '93.184.216.34', family: 4 },
        { address: '127.0.0.1', family: 4 },
      ])) as unknown as LookupFunction;
    expect(await refusal(policy([], rebinding), `http://rebinding.example:${port}/`)).toBeDefined();
    // A name gets a socket, whose lookup refuses before it connects anywhere.
    expect(connects).toEqual(['localhost', 'rebinding.example']);
    expect(connected).toEqual([]);
    expect(accepted).toBe(0);
  });

  it("lets the operator's allowlist through, by range or by name, and checks every redirect again", async () => {
    expect(await (await policy(['127.0.0.1/32']).fetch(`http://127.0.0.1:${port}/`)).text()).toBe('ok');
    expect(await (await policy(['localhost']).fetch(`http://localhost:${port}/`)).text()).toBe('ok');
    expect(accepted).toBe(2);
    redirectTo = 'http://169.254.169.254/latest/meta-data/';
    expect(await refusal(policy(['127.0.0.1/32']), `http://127.0.0.1:${port}/redirect`)).toBeDefined();
    expect(accepted).toBe(3);
    expect(connects).not.toContain('169.254.169.254');
    expect(connected.every((a) => a === '127.0.0.1')).toBe(true);
  });

  it("never echoes an upstream error body; a refusal names the operator's allowlist", async () => {
    const err = await discoverTools(
      { transport: 'http', url: `http://127.0.0.1:${port}/mcp` },
      { egress: policy(['127.0.0.1']), timeoutMs: 5_000 },
    ).catch((e: Error) => e);
    expect((err as Error).message).toMatch(/HTTP 500/);
    expect((err as Error).message).not.toContain('SECRET-UPSTREAM-BODY');
    const refused = await discoverTools(
      { transport: 'http', url: `http://127.0.0.1:${port}/mcp` },
      { egress: policy(), timeoutMs: 5_000 },
    ).catch((e: Error) => e);
    expect((refused as Error).message).toMatch(/LLMHUB_MCP_EGRESS_ALLOW/);
  });

  it('refuses an allowlist entry that is neither a range nor a name', () => {
    expect(() => new EgressPolicy(['http://x/'])).toThrow(/LLMHUB_MCP_EGRESS_ALLOW/);
  });
});
