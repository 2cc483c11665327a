import dns, { type LookupAddress } from 'node:dns';
import { BlockList, isIP, type LookupFunction } from 'node:net';
import { Agent, buildConnector, fetch as undiciFetch } from 'undici';

/**
 * Where the platform refuses to connect on a tenant's behalf (HTTP MCP servers), whatever name leads there: loopback,
 * private, link-local (cloud metadata 169.254.169.254 included), CGNAT, "this network", benchmarking, multicast and
 * reserved space, and their IPv6 counterparts (unique-local fc00::/7, which holds fd00:ec2::254; link-local; NAT64
 * and IPv4-compatible forms). Kubernetes pod and service ranges are private or CGNAT space, so they are covered too.
 */
const REFUSED: [string, number, 'ipv4' | 'ipv6'][] = [
  ['0.0.0.0', 8, 'ipv4'],
  ['10.0.0.0', 8, 'ipv4'],
  ['100.64.0.0', 10, 'ipv4'],
  ['127.0.0.0', 8, 'ipv4'],
  ['169.254.0.0', 16, 'ipv4'],
  ['172.16.0.0', 12, 'ipv4'],
  ['192.0.0.0', 24, 'ipv4'],
  ['192.168.0.0', 16, 'ipv4'],
  ['198.18.0.0', 15, 'ipv4'],
  ['224.0.0.0', 4, 'ipv4'],
  ['240.0.0.0', 4, 'ipv4'],
  ['::', 96, 'ipv6'],
  ['64:ff9b::', 96, 'ipv6'],
  ['fc00::', 7, 'ipv6'],
  ['fe80::', 10, 'ipv6'],
  ['ff00::', 8, 'ipv6'],
];

export class EgressRefusedError extends Error {
  readonly code = 'LLMHUB_EGRESS_REFUSED';
}

/** An IPv4-mapped IPv6 address is the IPv4 address for every rule. */
function normalize(address: string): { address: string; family: 'ipv4' | 'ipv6' } {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return { address: mapped[1]!, family: 'ipv4' };
  return { address, family: isIP(address) === 6 ? 'ipv6' : 'ipv4' };
}

/**
 * The operator's egress allowlist (LLMHUB_MCP_EGRESS_ALLOW, comma-separated): CIDRs or single addresses let those
 * addresses through; a host name lets that exact name through whatever it resolves to.
 */
export class EgressPolicy {
  private readonly refused = new BlockList();
  private readonly allowed = new BlockList();
  private readonly allowedHosts = new Set<string>();
  /** The dispatcher every outbound MCP HTTP request goes through: the check runs on the address it connects to. */
  readonly dispatcher: Agent;

  /**
   * `setting`: the allowlist's environment variable, named in refusals; `agent`: the dispatcher's pool options
   * (its `connect` is the check's own).
   */
  constructor(
    allow: readonly string[] = [],
    private readonly lookup: LookupFunction = dns.lookup,
    private readonly opts: { setting?: string; agent?: Omit<Agent.Options, 'connect'> } = {},
  ) {
    for (const [net, prefix, family] of REFUSED) this.refused.addSubnet(net, prefix, family);
    for (const raw of allow) {
      const entry = raw.trim();
      if (!entry) continue;
      const [net, bits] = entry.split('/');
      const family = isIP(net!);
      if (family) {
        const n = normalize(net!);
        this.allowed.addSubnet(
          n.address,
          bits === undefined ? (n.family === 'ipv4' ? 32 : 128) : Number(bits),
          n.family,
        );
      } else if (/^[a-z0-9.-]+$/i.test(entry)) this.allowedHosts.add(entry.toLowerCase());
      else throw new Error(`${this.setting}: '${entry}' is neither a CIDR, an address nor a host name`);
    }
    // The check sits in the lookup the socket connects with, so the address checked is the address connected to:
    // a name that resolves elsewhere between a check and the connect (DNS rebinding) has no gap to slip through.
    const guardedLookup = ((hostname: string, options: dns.LookupOptions, callback: Parameters<LookupFunction>[2]) => {
      lookup(hostname, { ...options, all: true }, (err, addresses) => {
        if (err) return callback(err, '', 0);
        const list = addresses as unknown as LookupAddress[];
        const bad = list.find((a) => !this.permits(hostname, a.address));
        if (bad) return callback(this.refusal(hostname), '', 0);
        if (options.all) return (callback as unknown as (e: null, a: LookupAddress[]) => void)(null, list);
        return callback(null, list[0]!.address, list[0]!.family);
      });
    }) as LookupFunction;
    const connect = buildConnector({ lookup: guardedLookup } as buildConnector.BuildOptions);
    this.dispatcher = new Agent({
      ...opts.agent,
      connect: (opts, callback) => {
        // An address literal is never looked up, so it is checked here, before any socket exists.
        const host = opts.hostname.replace(/^\[|\]$/g, '');
        if (isIP(host) && !this.permits(host, host)) return callback(this.refusal(host), null);
        return connect(opts, callback);
      },
    });
  }

  static fromEnv(
    raw: string | undefined,
    opts: { setting?: string; agent?: Omit<Agent.Options, 'connect'> } = {},
  ): EgressPolicy {
    return new EgressPolicy((raw ?? '').split(','), dns.lookup, opts);
  }

  private get setting(): string {
    return this.opts.setting ?? 'LLMHUB_MCP_EGRESS_ALLOW';
  }

  /**
   * Refuses (EgressRefusedError) a host that names or resolves to a refused address, as a registration's early
   * answer; the dispatcher checks again at every connect, so a name that changes where it points later gains nothing.
   */
  async check(hostname: string): Promise<void> {
    const host = hostname.replace(/^\[|\]$/g, '');
    if (isIP(host)) {
      if (!this.permits(host, host)) throw this.refusal(host);
      return;
    }
    const addresses = await new Promise<LookupAddress[]>((resolve, reject) =>
      this.lookup(host, { all: true }, (err, list) =>
        err ? reject(err) : resolve(list as unknown as LookupAddress[]),
      ),
    );
    if (addresses.some((a) => !this.permits(host, a.address))) throw this.refusal(host);
  }

  /** Whether a connection to `address` (reached through `hostname`) may be made. */
  permits(hostname: string, address: string): boolean {
    if (this.allowedHosts.has(hostname.toLowerCase())) return true;
    const { address: a, family } = normalize(address);
    return this.allowed.check(a, family) || !this.refused.check(a, family);
  }

  /** Names the host, not what it resolved to: a tenant learns nothing of the platform's internal DNS. */
  private refusal(hostname: string): EgressRefusedError {
    return new EgressRefusedError(
      `egress to ${hostname} is refused: loopback, private, link-local, metadata and other internal addresses are reachable only where a platform operator allows them (${this.setting})`,
    );
  }

  /** A fetch whose every connection, redirects included, goes through the checked dispatcher. */
  readonly fetch = (url: string | URL, init?: RequestInit): Promise<Response> =>
    undiciFetch(url, { ...(init as object), dispatcher: this.dispatcher }) as unknown as Promise<Response>;

  close(): Promise<void> {
    return this.dispatcher.close();
  }
}

/** The egress refusal somewhere in an error's cause chain (fetch wraps the connector's error as `cause`). */
export function egressRefusalIn(err: unknown): EgressRefusedError | undefined {
  for (let e = err; e instanceof Error; e = e.cause) if (e instanceof EgressRefusedError) return e;
  return undefined;
}
