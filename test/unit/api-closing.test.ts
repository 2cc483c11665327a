import { connect, type Socket } from 'node:net';
import { describe, expect, it } from '@jest/globals';
import Fastify from 'fastify';
import { errorsPlugin, frameworkErrorOptions } from '../../api/plugins/errors';

/** What the server writes on the socket until it closes it. */
const answerOn = (socket: Socket, request: string) =>
  new Promise<string>((resolve) => {
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('close', () => resolve(Buffer.concat(chunks).toString('utf8')));
    socket.write(request);
  });

describe('an API that is closing', () => {
  it('answers a request that arrives meanwhile 503 in the platform shape, and closes the connection', async () => {
    const app = Fastify({ ...frameworkErrorOptions });
    await app.register(errorsPlugin);
    app.get('/ok', async () => ({ ok: true }));
    let answer: Promise<string> | undefined;
    const peer: { socket?: Socket } = {};
    // After errorsPlugin's own preClose hook and before the server stops listening: a request sent now is one
    // that arrives while the API is closing.
    app.addHook('preClose', async () => {
      answer = answerOn(peer.socket!, 'GET /ok HTTP/1.1\r\nHost: x\r\n\r\n');
      await answer;
    });
    const { port } = new URL(await app.listen({ host: '127.0.0.1', port: 0 }));
    const socket = connect({ host: '127.0.0.1', port: Number(port) });
    peer.socket = socket;
    await new Promise((r) => socket.once('connect', r));
    await app.close();

    const raw = await answer!;
    expect(raw).toMatch(/^HTTP\/1\.1 503 /);
    expect(raw).toMatch(/\r\nconnection: close\r\n/i);
    expect(JSON.parse(raw.slice(raw.indexOf('\r\n\r\n') + 4))).toEqual({
      error: { type: 'unavailable', message: expect.any(String) },
    });
  });
});
