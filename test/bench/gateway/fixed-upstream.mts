/**
 * The gateway benchmark's fast upstream: answers every chat completion with a reply built once at start (JSON, or
 * an SSE stream of SSE_CHUNKS events written at once), in microseconds, so what a proxy in front of it costs is what
 * the benchmark measures. GET /v1/models answers too (the bench waits on it).
 */
import http from 'node:http';

const SSE_CHUNKS = 20;
const base = { id: 'chatcmpl-fixed', created: 1_700_000_000, model: 'bench-model', system_fingerprint: 'fixed' };
const usage = { prompt_tokens: 4, completion_tokens: SSE_CHUNKS, total_tokens: 4 + SSE_CHUNKS };
const json = Buffer.from(
  JSON.stringify({
    ...base,
    object: 'chat.completion',
    choices: [
      {
        index: 0,
        message: { role: 'assistant', content: 'fixed reply '.repeat(4) },
        finish_reason: 'stop',
        logprobs: null,
      },
    ],
    usage,
  }),
);
const event = (data: unknown) => `data: ${JSON.stringify(data)}\n\n`;
const chunk = (delta: object, finish: string | null) =>
  event({
    ...base,
    object: 'chat.completion.chunk',
    choices: [{ index: 0, delta, finish_reason: finish, logprobs: null }],
  });
// The role, tokens, the finish and the usage: SSE_CHUNKS events before [DONE].
const sse = [
  chunk({ role: 'assistant', content: '' }, null),
  ...Array.from({ length: SSE_CHUNKS - 3 }, (_, i) => chunk({ content: ` token${i}` }, null)),
  chunk({}, 'stop'),
  event({ ...base, object: 'chat.completion.chunk', choices: [], usage }),
  'data: [DONE]\n\n',
].map((e) => Buffer.from(e));
const models = Buffer.from(JSON.stringify({ object: 'list', data: [{ id: 'bench-model', object: 'model' }] }));

const server = http.createServer((req, res) => {
  if (req.method === 'GET') {
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': models.length });
    res.end(models);
    return;
  }
  const parts: Buffer[] = [];
  req.on('data', (b: Buffer) => parts.push(b));
  req.on('end', () => {
    // A marker the bench sends, so the body need not be parsed: the request asks for a stream.
    if (Buffer.concat(parts).includes('"stream":true')) {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
      for (const e of sse) res.write(e);
      res.end();
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': json.length });
    res.end(json);
  });
});
server.keepAliveTimeout = 65_000;
server.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () =>
  console.log(`fixed-reply upstream on ${JSON.stringify(server.address())}`),
);
process.once('SIGTERM', () => server.close(() => process.exit(0)));
