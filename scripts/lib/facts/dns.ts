// What a host's domains resolve to, and the droplet's own addresses: whether the ACME server
// (and clients) reach this droplet by those names. Read by letsencrypt before an order and by doctor.
import type { Host } from '../inventory.ts';
import type { Fact } from '../step.ts';
import { script, sh } from '../shell.ts';

/** A host's domains, in the order the certificate and the site name them. */
export const domainList = (host: Host): string[] => (host.domains ? [host.domains.api, host.domains.site, host.domains.dashboard] : []);

export interface DnsState {
  /** Each domain and the addresses it resolves to (none: it does not resolve). */
  names: Map<string, string[]>;
  /** The droplet's own addresses (hostname -I). */
  self: string[];
}

export function dnsFact(host: Host): Fact<DnsState> {
  const names = domainList(host);
  return {
    key: `dns:${names.join(',')}`,
    waits: true,
    command: script`${names.length ? sh`for d in ${names}; do printf 'dns %s' "$d"; for a in $(getent ahosts "$d" | awk '{print $1}' | sort -u); do printf ' %s' "$a"; done; echo; done; ` : sh``}printf 'self'; for a in $(hostname -I 2>/dev/null); do printf ' %s' "$a"; done; echo`,
    parse: out => {
      const state: DnsState = { names: new Map(), self: [] };
      for (const line of out.split('\n')) {
        const [kind, ...rest] = line.trim().split(/\s+/);
        if (kind === 'dns' && rest[0]) state.names.set(rest[0], rest.slice(1));
        if (kind === 'self') state.self = rest;
      }
      return state;
    },
  };
}

/** A domain that does not lead to the droplet: it resolves nowhere, or also somewhere else. */
export interface Misdirected { name: string; elsewhere: string[] }

/** The host's domains that do not resolve to `mine` alone (elsewhere empty: no address at all). */
export function misdirectedDomains(host: Host, dns: DnsState, mine: string[]): Misdirected[] {
  return domainList(host).flatMap(name => {
    const addresses = dns.names.get(name) ?? [];
    const elsewhere = addresses.filter(a => !mine.includes(a));
    return addresses.length === 0 || elsewhere.length ? [{ name, elsewhere }] : [];
  });
}
