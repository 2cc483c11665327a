import type { ChildProcess } from 'node:child_process';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from '@jest/globals';
import { createMcpActivities } from '../../activities/mcp';
import { EgressPolicy } from '../../common/egress';
import { AgentStore } from '../../common/store/agents';
import { AuditStore } from '../../common/store/audit';
import { McpCatalogStore } from '../../common/store/mcp-catalog';
import { startEverythingHttp } from '../support/mcp';
import { bearer, startTestPlatform, type TestPlatform, type TestTenant } from '../support/platform';

/**
 * HTTP MCP egress under an operator allowlist that holds 127.0.0.2 only: the tenant's URLs are checked on the
 * addresses they resolve to, when the API discovers tools and when the worker's activities connect.
 */
let p: TestPlatform;
let acme: TestTenant;
let everything: ChildProcess | undefined;
let allowedUrl: string;
let target: http.Server;
let targetPort: number;
let accepted = 0;
const connects: string[] = [];
const realConnect = net.Socket.prototype.connect;

beforeAll(async () => {
  p = await startTestPlatform({ mcpEgressAllow: ['127.0.0.2/32'] });
  acme = await p.createTenant('egress');
  const e = await startEverythingHttp('127.0.0.2');
  everything = e.process;
  allowedUrl = e.url;
  // A loopback server the refused URLs point at: it must never see a connection.
  target = http.createServer((_req, res) => res.writeHead(500).end('INTERNAL-SECRET-BODY'));
  target.on('connection', () => accepted++);
  await new Promise<void>((resolve) => target.listen(0, '127.0.0.1', resolve));
  targetPort = (target.address() as AddressInfo).port;
  net.Socket.prototype.connect = function (this: net.Socket, ...args: unknown[]) {
    // net.connect hands its normalized [options, callback] pair as the one argument.
    const o = (Array.isArray(args[0]) ? args[0][0] : args[0]) as { host?: string };
    connects.push(String(o?.host));
    return (realConnect as (...a: unknown[]) => net.Socket).apply(this, args);
  } as typeof realConnect;
});
afterEach(() => {
  connects.length = 0;
});
afterAll(async () => {
  net.Socket.prototype.connect = realConnect;
  everything?.kill('SIGTERM');
  await new Promise((resolve) => target?.close(resolve));
  await p?.close();
});

const register = (id: string, url: string) =>
  p.app.inject({
    method: 'POST',
    url: '/v1/mcp-servers',
    headers: bearer(acme.keys.admin),
    payload: { id, transport: 'http', url },
  });

describe('HTTP MCP egress', () => {
  it('refuses loopback, a name resolving to loopback, metadata and private addresses before any socket to them', async () => {
    const cases = [
      ['loopback', `http://127.0.0.1:${targetPort}/mcp`],
      ['named', `http://localhost:${targetPort}/mcp`],
      ['metadata', 'http://169.254.169.254/mcp'],
      ['metadata6', 'http://[fd00:ec2::254]/mcp'],
      ['private', 'http://10.0.0.1/mcp'],
    ];
    for (const [id, url] of cases) {
      const res = await register(id!, url!);
      expect({ id, status: res.statusCode, field: res.json().error.details.field }).toEqual({
        id,
        status: 403,
        field: 'body.url',
      });
      expect(res.json().error.message).toMatch(/egress to .* is refused.*LLMHUB_MCP_EGRESS_ALLOW/);
      expect(
        (await p.app.inject({ method: 'GET', url: `/v1/mcp-servers/${id}/tools`, headers: bearer(acme.keys.admin) }))
          .statusCode,
      ).toBe(404);
    }
    // Literal addresses never got a socket; `localhost` got one whose lookup refused before it connected.
    expect(connects.filter((h) => h !== 'localhost')).toEqual([]);
    expect(accepted).toBe(0);
  });

  it("lets the operator's allowlisted address through", async () => {
    const res = await register('allowed', allowedUrl);
    expect(res.statusCode).toBe(201);
    expect(res.json().tools.map((t: { name: string }) => t.name)).toContain('allowed__echo');
  });

  it("the worker's activities refuse a refused address too, and echo no upstream body", async () => {
    // A server row pointing at loopback, as if its name had resolved elsewhere when it was registered.
    const agents = new AgentStore(p.db);
    await agents.registerServer(acme.id, 'moved', { url: `http://127.0.0.1:${targetPort}/mcp` }, [
      {
        name: 'echo',
        description: '',
        inputSchema: { type: 'object' },
        annotations: {},
        definitionHash: 'f'.repeat(64),
      },
    ]);
    const policies: EgressPolicy[] = [];
    const activities = (allow: string[]) =>
      createMcpActivities({
        agents,
        audit: new AuditStore(p.db),
        catalog: new McpCatalogStore(p.db),
        objects: p.objects,
        platformBucket: 'unused',
        egress: policies[policies.push(new EgressPolicy(allow)) - 1]!,
        mcpTimeoutMs: 5_000,
      });
    const call = {
      tenantId: acme.id,
      workflowId: 'agent-run/x/y',
      agentId: 'a',
      toolCallId: 'c1',
      tool: 'moved__echo',
      arguments: {},
      definitionHash: 'f'.repeat(64),
      risk: 'write' as const,
    };
    await expect(activities([]).callMcpTool(call)).rejects.toThrow(/egress to 127\.0\.0\.1 is refused/);
    expect(accepted).toBe(0);
    expect(connects).toEqual([]);
    // Allowed, the server's error body stays out of the failure the run would record.
    const failed = await activities(['127.0.0.1'])
      .callMcpTool(call)
      .catch((e: Error) => e);
    expect(accepted).toBeGreaterThan(0);
    expect((failed as Error).message).toMatch(/HTTP 500/);
    expect((failed as Error).message).not.toContain('INTERNAL-SECRET-BODY');
    await Promise.all(policies.map((e) => e.close()));
  });
});
