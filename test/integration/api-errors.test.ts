import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { InjectOptions } from 'fastify';
import { MAX_PARAM_LENGTH } from '../../api/plugins/errors';
import { bearer, startTestPlatform, type TestPlatform, type TestTenant } from '../support/platform';

/**
 * Every error, Fastify's and Node's own included, answers in the platform's shape `{"error":{"type","message",
 * "details"?}}`, or in OpenAI's `{"error":{"message","type","param","code"}}` on the inference routes.
 */

const GATEWAY_BODY_LIMIT = 4096;
let p: TestPlatform;
let t: TestTenant;
let base: string;

beforeAll(async () => {
  p = await startTestPlatform({ worker: false, gateway: { bodyLimitBytes: GATEWAY_BODY_LIMIT } });
  t = await p.createTenant('errors');
  base = await p.app.listen({ host: '127.0.0.1', port: 0 });
});
afterAll(async () => {
  await p?.close();
});

/** The platform's shape and nothing else: no Fastify `statusCode`/`code`/string `error`. */
function expectPlatformShape(body: string, type: string): { message: string; details?: Record<string, unknown> } {
  const parsed = JSON.parse(body) as { error: { type: string; message: string; details?: Record<string, unknown> } };
  expect(Object.keys(parsed)).toEqual(['error']);
  expect(parsed.error).toEqual({
    type,
    message: expect.any(String),
    ...('details' in parsed.error ? { details: expect.any(Object) } : {}),
  });
  return parsed.error;
}

function expectOpenAiShape(body: string, code: string): { message: string; type: string } {
  const parsed = JSON.parse(body) as { error: { message: string; type: string; param: unknown; code: unknown } };
  expect(Object.keys(parsed)).toEqual(['error']);
  expect(parsed.error).toEqual({
    message: expect.any(String),
    type: expect.any(String),
    param: null,
    code,
  });
  return parsed.error;
}

const inject = (opts: InjectOptions & { key?: string }) =>
  p.app.inject({ ...opts, headers: { ...bearer(opts.key ?? t.keys.admin), ...opts.headers } });

/** A raw HTTP exchange on a fresh socket: what the server writes until it closes the connection. */
function rawExchange(request: string): Promise<string> {
  const { hostname, port } = new URL(base);
  return new Promise((resolve, reject) => {
    const socket = connect({ host: hostname, port: Number(port) });
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    let failure: Error | undefined;
    // The server closes the connection after such an answer, maybe before reading all that was sent (a reset).
    socket.on('error', (err) => (failure = err));
    socket.on('close', () =>
      chunks.length ? resolve(Buffer.concat(chunks).toString('utf8')) : reject(failure ?? new Error('no answer')),
    );
    socket.end(request);
  });
}
const statusOf = (raw: string) => Number(/^HTTP\/1\.1 (\d{3})/.exec(raw)?.[1]);
const bodyOf = (raw: string) => raw.slice(raw.indexOf('\r\n\r\n') + 4);

describe("the router's errors", () => {
  it('a path parameter over the maximum length is 414 in the platform shape, on the socket and through inject', async () => {
    const url = `/v1/models/${'m'.repeat(MAX_PARAM_LENGTH + 1)}`;
    const res = await fetch(`${base}${url}`, { headers: bearer(t.keys.admin) });
    expect(res.status).toBe(414);
    expect(expectPlatformShape(await res.text(), 'uri_too_long').details).toEqual({ field: 'path' });
    const injected = await inject({ method: 'GET', url });
    expect(injected.statusCode).toBe(414);
    expectPlatformShape(injected.body, 'uri_too_long');
    // One character less reaches the route, whose own checks answer.
    const fits = await inject({ method: 'GET', url: `/v1/models/${'m'.repeat(MAX_PARAM_LENGTH)}` });
    expect(fits.statusCode).not.toBe(414);
    expect(fits.statusCode).toBeLessThan(500);
    expectPlatformShape(fits.body, JSON.parse(fits.body).error.type);
  });

  it('a path that is not valid percent-encoding is 400 naming the path', async () => {
    for (const url of ['/v1/models/%zz', '/v1/models/%E0%A4%A', '/v1/chat/completions%E0']) {
      const raw = await rawExchange(`GET ${url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
      expect({ url, status: statusOf(raw) }).toEqual({ url, status: 400 });
      expect(expectPlatformShape(bodyOf(raw), 'invalid_request').details).toEqual({ field: 'path' });
    }
  });

  it('an unknown path is 404, and a known path asked with another method 405 with Allow', async () => {
    const unknown = await inject({ method: 'GET', url: '/v1/no-such-thing' });
    expect(unknown.statusCode).toBe(404);
    expectPlatformShape(unknown.body, 'not_found');

    const wrong = await inject({ method: 'DELETE', url: '/v1/models' });
    expect(wrong.statusCode).toBe(405);
    expect(wrong.headers.allow).toBe('GET, HEAD, POST');
    expect(expectPlatformShape(wrong.body, 'method_not_allowed').details).toEqual({ allow: ['GET', 'HEAD', 'POST'] });

    const withParams = await inject({ method: 'PATCH', url: '/v1/models/some-model/versions?x=1' });
    expect(withParams.statusCode).toBe(405);
    expect(withParams.headers.allow).toBe('GET, HEAD, POST');

    const platform = await inject({ method: 'GET', url: '/v1/platform/tenants/x/suspend', key: p.operatorKey });
    expect(platform.statusCode).toBe(405);
    expect(platform.headers.allow).toBe('POST');
    expectPlatformShape(platform.body, 'method_not_allowed');

    // The routes of the OpenAPI document's plugin are known too.
    const doc = await inject({ method: 'POST', url: '/openapi.json' });
    expect(doc.statusCode).toBe(405);
    expect(doc.headers.allow).toBe('GET, HEAD');
  });

  it('credentials are still checked first: without them a wrong method is 401, as any other route', async () => {
    const res = await p.app.inject({ method: 'DELETE', url: '/v1/models' });
    expect(res.statusCode).toBe(401);
    expectPlatformShape(res.body, 'unauthorized');
  });
});

describe("body parsing's errors on control routes", () => {
  const post = (payload: string, contentType: string) =>
    inject({ method: 'POST', url: '/v1/models', payload, headers: { 'content-type': contentType } });

  it('invalid JSON, an empty JSON body, an unsupported media type and a body over the limit', async () => {
    const cases: [string, string, number, string][] = [
      ['{"id": ', 'application/json', 400, 'invalid_request'],
      ['', 'application/json', 400, 'invalid_request'],
      ['{"__proto__": {"x": 1}, "id": "m"}', 'application/json', 400, 'invalid_request'],
      ['<model/>', 'application/xml', 415, 'unsupported_media_type'],
      [
        JSON.stringify({ id: 'm', description: 'x'.repeat((1 << 20) + 1) }),
        'application/json',
        413,
        'payload_too_large',
      ],
    ];
    for (const [payload, contentType, status, type] of cases) {
      const res = await post(payload, contentType);
      expect({ payload: payload.slice(0, 40), status: res.statusCode }).toEqual({
        payload: payload.slice(0, 40),
        status,
      });
      expectPlatformShape(res.body, type);
    }
  });

  it('a body nested past 128 levels is 400 naming the body, not a stack overflow in the checks after parsing', async () => {
    const res = await post(`{"id": ${'['.repeat(20_000)}${']'.repeat(20_000)}}`, 'application/json');
    expect(res.statusCode).toBe(400);
    expect(expectPlatformShape(res.body, 'invalid_request')).toMatchObject({
      message: 'the body nests arrays and objects deeper than 128 levels',
      details: { field: 'body' },
    });
  });

  it("an empty JSON body on a route that takes none is no body (OpenAI's Python client sends one on cancel and delete)", async () => {
    const bodiless = (method: 'POST' | 'DELETE', url: string) =>
      inject({ method, url, payload: '', headers: { 'content-type': 'application/json' } });
    // Parsed as no body: the route itself answers, here that there is no such file or batch.
    for (const res of [
      await bodiless('DELETE', '/v1/files/file-0123456789abcdef01234567'),
      await bodiless('POST', '/v1/batches/batch_0123456789abcdef01234567/cancel'),
    ]) {
      expect(res.statusCode).toBe(404);
      expectPlatformShape(res.body, 'not_found');
    }
  });
});

describe('inference routes answer in OpenAI’s shape', () => {
  const post = (payload: string, contentType: string) =>
    inject({
      method: 'POST',
      url: '/v1/chat/completions',
      payload,
      headers: { 'content-type': contentType },
      key: t.keys.developer,
    });

  it('for invalid JSON, an unsupported media type, a body over the gateway limit or nested too deep, a wrong method', async () => {
    const cases: [string, string, number, string][] = [
      ['{"model": ', 'application/json', 400, 'invalid_request'],
      ['<chat/>', 'application/xml', 415, 'unsupported_media_type'],
      [
        JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'x'.repeat(GATEWAY_BODY_LIMIT) }] }),
        'application/json',
        413,
        'payload_too_large',
      ],
      // Nested past 128 levels: refused at parsing, before anything walks it.
      [
        `{"model": "m", "messages": ${'['.repeat(1000)}${']'.repeat(1000)}}`,
        'application/json',
        400,
        'invalid_request',
      ],
    ];
    for (const [payload, contentType, status, code] of cases) {
      const res = await post(payload, contentType);
      expect({ payload: payload.slice(0, 20), status: res.statusCode }).toEqual({
        payload: payload.slice(0, 20),
        status,
      });
      expectOpenAiShape(res.body, code);
    }
    const wrong = await inject({ method: 'GET', url: '/v1/embeddings', key: t.keys.developer });
    expect(wrong.statusCode).toBe(405);
    expect(wrong.headers.allow).toBe('POST');
    expect(expectOpenAiShape(wrong.body, 'method_not_allowed').type).toBe('invalid_request_error');
  });
});

describe('a compressed body (Content-Encoding) is 415 naming the header, on every route that reads a body', () => {
  const encoded = (url: string, contentType: string, coding: string, key = t.keys.admin) =>
    inject({
      method: 'POST',
      url,
      payload: '{}',
      headers: { 'content-type': contentType, 'content-encoding': coding },
      key,
    });
  const refusal = { message: "Content-Encoding 'gzip' is not supported: send the body uncompressed" };

  it('control routes, the batch file upload and the document upload: the platform shape', async () => {
    for (const [url, contentType] of [
      ['/v1/models', 'application/json'],
      ['/v1/files', 'multipart/form-data; boundary=x'],
      ['/v1/knowledge/docs/files?name=a.md', 'text/markdown'],
    ] as const) {
      const res = await encoded(url, contentType, 'gzip');
      expect({ url, status: res.statusCode }).toEqual({ url, status: 415 });
      expect(expectPlatformShape(res.body, 'unsupported_media_type')).toEqual({
        ...refusal,
        type: 'unsupported_media_type',
        details: { field: 'headers.content-encoding' },
      });
    }
    // identity is no coding: the route reads the body and answers for it (here, its missing fields).
    const plain = await encoded('/v1/models', 'application/json', 'identity');
    expect(plain.statusCode).toBe(400);
    expect(expectPlatformShape(plain.body, 'invalid_request').details).toMatchObject({ field: 'body.id' });
  });

  it("inference routes: OpenAI's shape, the header as its param", async () => {
    const res = await encoded('/v1/chat/completions', 'application/json', 'gzip', t.keys.developer);
    expect(res.statusCode).toBe(415);
    expect(JSON.parse(res.body)).toEqual({
      error: {
        ...refusal,
        type: 'invalid_request_error',
        param: 'headers.content-encoding',
        code: 'unsupported_media_type',
      },
    });
  });
});

describe('response headers', () => {
  it('every answer says nosniff; the API documentation pages carry their Content-Security-Policy', async () => {
    for (const res of [
      await inject({ method: 'GET', url: '/v1/models' }),
      await inject({ method: 'GET', url: '/v1/models/none' }),
      await p.app.inject({ method: 'GET', url: '/healthz' }),
    ])
      expect(res.headers['x-content-type-options']).toBe('nosniff');
    const docs = await p.app.inject({ method: 'GET', url: '/docs' });
    expect(docs.statusCode).toBe(200);
    expect(docs.headers['content-security-policy']).toEqual(
      expect.stringMatching(/default-src 'self'.*frame-ancestors 'self'.*object-src 'none'/),
    );
  });
});

describe('the OpenAPI document', () => {
  it('lists the errors Fastify and the auth budget add: 413/415 on bodies, 414 on path parameters, 429', async () => {
    const doc = (await p.app.inject({ method: 'GET', url: '/openapi.json' })).json() as {
      paths: Record<string, Record<string, { responses: Record<string, { content?: Record<string, unknown> }> }>>;
    };
    // A prefix's own route is documented with the prefix's trailing slash (`/v1/models/`).
    const codes = (path: string, method: string) =>
      Object.keys((doc.paths[path] ?? doc.paths[`${path}/`])![method]!.responses);
    expect(codes('/v1/models', 'post')).toEqual(expect.arrayContaining(['400', '401', '403', '413', '415', '429']));
    expect(codes('/v1/models/{modelId}', 'get')).toEqual(expect.arrayContaining(['401', '414', '429']));
    expect(codes('/v1/models/{modelId}', 'get')).not.toContain('413');
    expect(codes('/v1/chat/completions', 'post')).toEqual(expect.arrayContaining(['400', '413', '415', '429']));
    expect(codes('/healthz', 'get')).not.toContain('429');
  });
});

describe("Node's HTTP parser's errors", () => {
  it('headers over the limit are 431 and a request that is not HTTP 400, in the platform shape', async () => {
    const huge = await rawExchange(`GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20 * 1024)}\r\n\r\n`);
    expect(statusOf(huge)).toBe(431);
    expectPlatformShape(bodyOf(huge), 'headers_too_large');
    const garbage = await rawExchange('NOT HTTP AT ALL\r\n\r\n');
    expect(statusOf(garbage)).toBe(400);
    expectPlatformShape(bodyOf(garbage), 'invalid_request');
  });
});

describe('a request sent too slowly', () => {
  const LIMIT_MS = 1_000;
  let slow: TestPlatform;
  let slowBase: URL;
  let key: string;
  beforeAll(async () => {
    slow = await startTestPlatform({ worker: false, requestTimeoutMs: LIMIT_MS });
    key = (await slow.createTenant('slow')).keys.developer;
    slowBase = new URL(await slow.app.listen({ host: '127.0.0.1', port: 0 }));
  });
  afterAll(async () => {
    await slow?.close();
  });

  it('a body trickled a byte at a time is cut off with 408 in the platform shape, not held open', async () => {
    const socket = connect({ host: slowBase.hostname, port: Number(slowBase.port) });
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', () => undefined);
    socket.write(
      `POST /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${key}\r\n` +
        'Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n',
    );
    // The attack: always sending, never done. Without a limit the server waited for the rest for ever.
    const trickle = setInterval(() => socket.writable && socket.write(' '), 50);
    await new Promise((resolve) => socket.on('close', resolve));
    clearInterval(trickle);
    const raw = Buffer.concat(chunks).toString('utf8');
    expect(statusOf(raw)).toBe(408);
    expectPlatformShape(bodyOf(raw), 'request_timeout');
  });
});
