import { PassThrough } from 'node:stream';
import { describe, expect, it, jest } from '@jest/globals';
import Fastify, { type FastifyBaseLogger } from 'fastify';
import { requestLoggerFactory } from '../../api/plugins/request-logger';
import { createLogger } from '../../common/logger';

describe("a request's logger", () => {
  it('makes no child for a request that logs nothing at the enabled level, and writes the lines it does log as a child would', async () => {
    const lines: string[] = [];
    const sink = new PassThrough();
    sink.on('data', (c: Buffer) => lines.push(...c.toString('utf8').split('\n').filter(Boolean)));
    const logger = createLogger('test', 'warn', sink);
    const app = Fastify({ loggerInstance: logger as FastifyBaseLogger, childLoggerFactory: requestLoggerFactory });
    app.get('/quiet', async (request) => {
      request.log.info('not at the enabled level');
      return { ok: true };
    });
    app.get('/loud', async (request) => {
      request.log.warn({ token: { token: 'secret-value' }, n: 1 }, 'something to say');
      return { ok: true };
    });

    // Fastify's app logger is itself a child of the one given; requests' loggers are made from it.
    await app.ready();
    const child = jest.spyOn(app.log, 'child');
    const quiet = await app.inject({ url: '/quiet' });
    expect(quiet.statusCode).toBe(200);
    expect(child).not.toHaveBeenCalled();

    const loud = await app.inject({ url: '/loud' });
    expect(loud.statusCode).toBe(200);
    expect(child).toHaveBeenCalledTimes(1);
    await new Promise((r) => setImmediate(r));
    const written = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(written).toHaveLength(1);
    expect(written[0]).toMatchObject({
      level: 40,
      msg: 'something to say',
      reqId: expect.any(String),
      n: 1,
      token: { token: '[redacted]' },
    });
    await app.close();
  });
});
