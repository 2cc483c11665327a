import { isIPv4, isIPv6 } from 'node:net';
import { setBounded } from './key-cache';

/**
 * Where a request comes from, for the failed-authentication budget: the IPv4 address, or the /64 of an IPv6 address
 * (one host usually holds a whole /64, so counting single IPv6 addresses would give it billions of budgets).
 */
export function sourceOf(ip: string): string {
  const address = ip.split('%')[0]!;
  if (address.toLowerCase().startsWith('::ffff:') && isIPv4(address.slice(7))) return address.slice(7);
  if (!isIPv6(address)) return address;
  const [head = '', tail] = address.split('::');
  const groupsOf = (part: string) => (part ? part.split(':') : []);
  const [before, after] = [groupsOf(head), groupsOf(tail ?? '')];
  const width = (groups: string[]) => groups.reduce((n, g) => n + (g.includes('.') ? 2 : 1), 0);
  const zeros = tail === undefined ? 0 : Math.max(0, 8 - width(before) - width(after));
  const groups = [...before, ...Array<string>(zeros).fill('0'), ...after];
  return `${groups
    .slice(0, 4)
    .map((g) => parseInt(g, 16).toString(16))
    .join(':')}::/64`;
}

/**
 * Failed authentications allowed per source: a token bucket of `perMinute` attempts, refilled evenly over a minute.
 * An attempt is taken before an unrecognised credential is looked up, so concurrent attempts cannot overdraw it, and
 * handed back when the credential verifies. At most `maxSources` sources are tracked (the least recently charged go).
 */
export class FailureBudget {
  private readonly sources = new Map<string, { tokens: number; at: number }>();

  constructor(
    private readonly perMinute: number,
    private readonly maxSources = 100_000,
    private readonly now: () => number = Date.now,
  ) {}

  /** Takes one attempt from the source's budget; when none is left, how many seconds until one is. */
  take(source: string): { ok: true } | { ok: false; retryAfterSeconds: number } {
    const bucket = this.refilled(source);
    if (bucket.tokens < 1) {
      return { ok: false, retryAfterSeconds: Math.ceil(((1 - bucket.tokens) * 60) / this.perMinute) };
    }
    setBounded(this.sources, source, { tokens: bucket.tokens - 1, at: bucket.at }, this.maxSources);
    return { ok: true };
  }

  /** Hands back an attempt whose credential verified. */
  refund(source: string): void {
    const bucket = this.sources.get(source);
    if (bucket) bucket.tokens = Math.min(this.perMinute, bucket.tokens + 1);
  }

  private refilled(source: string): { tokens: number; at: number } {
    const at = this.now();
    const bucket = this.sources.get(source);
    if (!bucket) return { tokens: this.perMinute, at };
    return { tokens: Math.min(this.perMinute, bucket.tokens + ((at - bucket.at) * this.perMinute) / 60_000), at };
  }
}
