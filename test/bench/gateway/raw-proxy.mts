/**
 * The baseline for the gateway benchmark: the least a Node reverse proxy can do (node:http in and out,
 * keep-alive pool, bodies piped). No auth, routing, limits or metrics; what the gateway adds is measured against it.
 */
import http from 'node:http';

const upstream = new URL(process.env.UPSTREAM_URL ?? 'http://127.0.0.1:8001');
const agent = new http.Agent({ keepAlive: true, maxSockets: 1024 });

const server = http.createServer((req, res) => {
  const out = http.request(
    { host: upstream.hostname, port: upstream.port, path: req.url, method: req.method, headers: req.headers, agent },
    (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers);
      up.pipe(res);
    },
  );
  out.on('error', () => res.destroy());
  res.on('close', () => out.destroy());
  req.pipe(out);
});
server.keepAliveTimeout = 65_000;
server.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () =>
  console.log(`raw proxy on ${JSON.stringify(server.address())} -> ${upstream.href}`),
);
process.once('SIGTERM', () => server.close(() => process.exit(0)));
