import type { IncomingHttpHeaders } from 'node:http';
import { UnsupportedMediaTypeError } from '../common/errors';

/**
 * The refusal of a body sent compressed (any Content-Encoding but identity), or undefined. Bodies are read as sent:
 * a gzip body was parsed as JSON (a misleading 400) or stored as a document's or batch file's bytes. HTTP's answer to a
 * content coding the server does not take is 415 (RFC 9110, 15.5.16); called by every body parser.
 */
export function encodedBodyError(headers: IncomingHttpHeaders): UnsupportedMediaTypeError | undefined {
  const coding = headers['content-encoding'];
  if (coding === undefined || /^\s*identity\s*$/i.test(coding)) return undefined;
  return new UnsupportedMediaTypeError(
    `Content-Encoding '${coding.slice(0, 64)}' is not supported: send the body uncompressed`,
    'headers.content-encoding',
  );
}
