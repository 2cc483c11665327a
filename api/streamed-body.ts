import type { IncomingMessage } from 'node:http';
import { Transform, type Readable } from 'node:stream';
import { BadRequestError, PayloadTooLargeError } from '../common/errors';

/**
 * A raw request body on its way to `store` as it arrives, so a request holds a few object parts in memory, never the
 * whole body: at most `maxBytes` (413 beyond, before any byte is read when Content-Length says so) and not empty (400).
 * A body refused part-way, or whose client goes away, fails its stream, which ends `store` without an object (an
 * ObjectStore's putStream drops the parts it sent). Returns the body's size.
 */
export async function storeBody(
  raw: IncomingMessage,
  maxBytes: number,
  store: (body: Readable) => Promise<void>,
): Promise<number> {
  const tooLarge = () => new PayloadTooLargeError(`the body has more than ${maxBytes} bytes`, 'body');
  if (Number(raw.headers['content-length']) > maxBytes) throw tooLarge();
  let bytes = 0;
  let refused: Error | undefined;
  const counted = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      bytes += chunk.length;
      if (bytes > maxBytes) done((refused = tooLarge()));
      else done(null, chunk);
    },
    flush(done) {
      if (bytes > 0) done();
      else done((refused = new BadRequestError('the request body must be the file content', 'body')));
    },
  });
  let ended = false;
  raw.once('end', () => (ended = true));
  raw.once('close', () => {
    if (!ended) counted.destroy((refused = new BadRequestError('the request ended before its body did', 'body')));
  });
  raw.on('error', (err) => counted.destroy(err));
  raw.pipe(counted);
  try {
    await store(counted);
  } catch (err) {
    throw refused ?? err;
  } finally {
    // What is left of a refused body is for Node to drain once the answer is sent.
    raw.unpipe(counted);
  }
  return bytes;
}
