import { ForbiddenError } from '../common/errors';
import { EgressRefusedError, type EgressPolicy } from '../common/egress';
import { MissingReferenceError } from './resource-schemas';

/**
 * A tenant-supplied outbound URL (a provider's base URL, a budget webhook) as a place to call, checked when it is
 * set. As for HTTP MCP servers: an address the operators' egress policy refuses is forbidden; a host that does not
 * resolve names nothing to call. The dispatcher of the calls checks again at every connect.
 */
export async function checkedOutboundUrl(raw: string, egress: EgressPolicy, field: string): Promise<string> {
  const name = field.replace(/^body\./, '');
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new MissingReferenceError(`${name} names no host`, field);
  }
  try {
    await egress.check(url.hostname);
  } catch (err) {
    if (err instanceof EgressRefusedError) throw new ForbiddenError(err.message, { field });
    throw new MissingReferenceError(`${name}'s host ${url.hostname} does not resolve`, field);
  }
  return url.toString();
}
