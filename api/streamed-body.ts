import type { IncomingMessage } from 'node:http';
import { Transform, type Readable } from 'node:stream';
import { BadRequestError, PayloadTooLargeError } from '../common/errors';

/** What a body's bytes are checked by on their way: each chunk as it passes, then its end; a problem is thrown. */
export interface BodyCheck {
  write(chunk: Buffer): void;
  end(): void;
}

/**
 * A body's bytes on their way to an object store, checked as they pass. The first refusal (the check's, or one given to
 * `refuse`) fails the stream, which ends the store's upload without an object (an ObjectStore's putStream drops the
 * parts it sent), and is what `store` throws.
 */
export class CheckedStream {
  private refused: Error | undefined;
  private readonly body: Transform;

  constructor(check: BodyCheck) {
    const refuse = (done: (err: Error) => void, err: unknown) => done((this.refused ??= err as Error));
    this.body = new Transform({
      transform(chunk: Buffer, _encoding, done) {
        try {
          check.write(chunk);
          done(null, chunk);
        } catch (err) {
          refuse(done, err);
        }
      },
      flush(done) {
        try {
          check.end();
          done();
        } catch (err) {
          refuse(done, err);
        }
      },
    });
  }

  refuse(err: Error): void {
    this.refused ??= err;
    this.body.destroy(err);
  }

  /** Sends `source` through the check to `put`; the rest of a refused source is left unread, for its owner. */
  async store(source: Readable, put: (body: Readable) => Promise<void>): Promise<void> {
    source.on('error', (err) => this.body.destroy(err));
    source.pipe(this.body);
    try {
      await put(this.body);
    } catch (err) {
      throw this.refused ?? err;
    } finally {
      source.unpipe(this.body);
    }
    if (this.refused) throw this.refused;
  }
}

/** Calls `gone` when the request's client goes away (or the request timeout cuts it off) before its body ended. */
export function onAbandoned(raw: IncomingMessage, gone: (err: Error) => void): void {
  let ended = false;
  raw.once('end', () => (ended = true));
  raw.once('close', () => {
    if (!ended) gone(new BadRequestError('the request ended before its body did', 'body'));
  });
}

/**
 * A raw request body on its way to `store` as it arrives, so a request holds a few object parts in memory, never the
 * whole body: at most `maxBytes` (413 beyond, before any byte is read when Content-Length says so) and not empty (400).
 * A body refused part-way, or whose client goes away, leaves no object. Returns the body's size.
 */
export async function storeBody(
  raw: IncomingMessage,
  maxBytes: number,
  store: (body: Readable) => Promise<void>,
): Promise<number> {
  const tooLarge = () => new PayloadTooLargeError(`the body has more than ${maxBytes} bytes`, 'body');
  if (Number(raw.headers['content-length']) > maxBytes) throw tooLarge();
  let bytes = 0;
  const checked = new CheckedStream({
    write(chunk) {
      bytes += chunk.length;
      if (bytes > maxBytes) throw tooLarge();
    },
    end() {
      if (bytes === 0) throw new BadRequestError('the request body must be the file content', 'body');
    },
  });
  onAbandoned(raw, (err) => checked.refuse(err));
  // What is left of a refused body is for Node to drain once the answer is sent.
  await checked.store(raw, store);
  return bytes;
}
