import type { IncomingMessage } from 'node:http';
import { Readable } from 'node:stream';
import { Busboy, type BusboyFileStream, type BusboyHeaders } from '@fastify/busboy';
import { BadRequestError, PayloadTooLargeError } from '../common/errors';
import { BatchInputChecker, MAX_FILE_BYTES, type CheckedInput } from './batch-input';
import { CheckedStream, onAbandoned } from './streamed-body';

/** A form field's most bytes (`purpose`, or a file sent as a plain field rather than a file part). */
const MAX_FIELD_BYTES = 1024 * 1024;
/** Parts a form may have: `file` and `purpose`, and a few a client adds that are ignored. */
const MAX_PARTS = 16;

export interface ReceivedFile {
  filename: string;
  bytes: number;
  checked: CheckedInput;
}

/**
 * Reads a batch upload's multipart form (`file`, `purpose: batch`) as it arrives: the file's lines are checked while its
 * bytes go on to `store`, so an upload holds a line and a few object parts in memory, never the file (a 200 MB file
 * held whole, with its copies, took the api process ~1 GiB). Throws the first problem as a 4xx naming its field. A file
 * refused while it arrives is not stored (its stream fails, which ends `store`); one whose form fails after it (its
 * `purpose`) was, and is the caller's to remove.
 */
export function receiveBatchFile(
  raw: IncomingMessage,
  opts: { maxLineBytes: number; store: (body: Readable) => Promise<void> },
): Promise<ReceivedFile> {
  return new Promise((resolve, reject) => {
    let form: ReturnType<typeof Busboy>;
    try {
      form = Busboy({
        headers: raw.headers as BusboyHeaders,
        limits: { parts: MAX_PARTS, fieldSize: MAX_FIELD_BYTES, fileSize: MAX_FILE_BYTES },
      });
    } catch (err) {
      reject(notMultipart(err));
      return;
    }
    let purpose: string | undefined;
    let file: Promise<ReceivedFile> | undefined;
    /** The file part's bytes on their way to `store`; refused, they end the store's upload (its parts dropped). */
    let inFlight: CheckedStream | undefined;
    let settled = false;
    // The first problem ends the upload: the rest of the request is left unread, for Node to drain once answered.
    const fail = (err: unknown) => {
      if (settled) return;
      settled = true;
      raw.unpipe(form);
      inFlight?.refuse(err as Error);
      reject(err);
    };
    // A client that goes away mid-file leaves no upload waiting for the rest.
    onAbandoned(raw, fail);
    form.on('field', (name, value, _nameTruncated, valueTruncated) => {
      if (name === 'purpose') purpose = value;
      else if (name === 'file' && !file) {
        if (valueTruncated)
          return fail(
            new PayloadTooLargeError(
              `a file sent as a plain form field may have ${MAX_FIELD_BYTES} bytes; send a file part`,
              'body.file',
            ),
          );
        file = receive(Readable.from([Buffer.from(value, 'utf8')]), 'upload.jsonl');
        file.catch(fail);
      }
    });
    form.on('file', (name, stream, filename) => {
      if (name !== 'file' || file) return void stream.resume();
      file = receive(stream, filename);
      file.catch(fail);
    });
    form.on('partsLimit', () => fail(new BadRequestError(`the form has more than ${MAX_PARTS} parts`, 'body')));
    form.on('error', (err) => fail(notMultipart(err)));
    form.on('finish', () => {
      if (!file)
        return fail(new BadRequestError('a multipart/form-data body with a file part is required', 'body.file'));
      file.then((received) => {
        if (purpose !== 'batch') return fail(new BadRequestError("purpose must be 'batch'", 'body.purpose'));
        if (!settled) {
          settled = true;
          resolve(received);
        }
      }, fail);
    });
    raw.pipe(form);

    /** The file part: its lines checked on the way to `store`. */
    async function receive(part: Readable, filename: string): Promise<ReceivedFile> {
      const checker = new BatchInputChecker(opts.maxLineBytes);
      let bytes = 0;
      let checked: CheckedInput | undefined;
      const lines = (inFlight = new CheckedStream({
        write(chunk) {
          checker.write(chunk);
          bytes += chunk.length;
        },
        end() {
          checked = checker.end();
        },
      }));
      (part as BusboyFileStream).on('limit', () =>
        lines.refuse(new PayloadTooLargeError(`the file has more than ${MAX_FILE_BYTES} bytes`, 'body.file')),
      );
      try {
        await lines.store(part, opts.store);
      } finally {
        // A part that was refused is read to its end, so the form goes on to the parts after it.
        part.resume();
      }
      if (!checked) throw new BadRequestError('the file part ended early', 'body.file');
      return { filename, bytes, checked };
    }
  });
}

const notMultipart = (err: unknown) =>
  new BadRequestError(`not a multipart form: ${err instanceof Error ? err.message : String(err)}`, 'body');
