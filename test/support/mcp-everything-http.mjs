// TEST FIXTURE: the npm `@modelcontextprotocol/server-everything` tools over streamable HTTP on one loopback address
// (argv[3], default 127.0.0.1) only.
// The package's own `streamableHttp` mode listens on every interface (no host setting), so the tests host the
// package's real server factory behind the SDK's StreamableHTTPServerTransport themselves, in stateless mode
// (a server per request, as the SDK's stateless example does). Prints {"url"} on stdout once listening.
import http from 'node:http';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { createServer } from '@modelcontextprotocol/server-everything/dist/server/index.js';

const server = http.createServer(async (req, res) => {
  if (req.url !== '/mcp') return res.writeHead(404).end();
  if (req.method !== 'POST') return res.writeHead(405).end();
  const { server: mcp, cleanup } = createServer();
  const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined });
  res.on('close', () => {
    void transport.close();
    void mcp.close();
    cleanup?.();
  });
  try {
    await mcp.connect(transport);
    await transport.handleRequest(req, res);
  } catch (err) {
    if (!res.headersSent) res.writeHead(500).end(String(err));
  }
});
const host = process.argv[3] ?? '127.0.0.1';
server.listen(Number(process.argv[2] ?? 0), host, () => {
  console.log(JSON.stringify({ url: `http://${host}:${server.address().port}/mcp` }));
});
process.once('SIGTERM', () => server.close(() => process.exit(0)));
