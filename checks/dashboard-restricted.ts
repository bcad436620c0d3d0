import type { Check } from '../scripts/lib/check.ts';
import { sh } from '../scripts/lib/shell.ts';
import { trustedCa } from '../scripts/lib/steps/letsencrypt.ts';

/** An IPv4 or IPv6 address as a number and its width in bits, or undefined when it is neither. */
export function parseAddress(text: string): { value: bigint; bits: 32 | 128 } | undefined {
  if (/^\d{1,3}(\.\d{1,3}){3}$/.test(text)) {
    const parts = text.split('.').map(Number);
    if (parts.some(p => p > 255)) return undefined;
    return { value: parts.reduce((n, p) => (n << 8n) | BigInt(p), 0n), bits: 32 };
  }
  if (!/^[0-9a-fA-F:]+$/.test(text) || !text.includes(':')) return undefined;
  const [head = '', tail] = text.split('::');
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  if (text.split('::').length > 2) return undefined;
  const groups = tail === undefined ? left : [...left, ...Array(8 - left.length - right.length).fill('0'), ...right];
  if (groups.length !== 8 || groups.some(g => g.length === 0 || g.length > 4)) return undefined;
  return { value: groups.reduce((n, g) => (n << 16n) | BigInt(parseInt(g, 16)), 0n), bits: 128 };
}

/** Whether an address is inside a CIDR (a bare address is a /32 or /128). */
export function cidrContains(cidr: string, address: string): boolean {
  const [base = '', prefixText] = cidr.split('/');
  const network = parseAddress(base);
  const ip = parseAddress(address);
  if (!network || !ip || network.bits !== ip.bits) return false;
  const prefix = prefixText === undefined ? network.bits : Number(prefixText);
  const shift = BigInt(network.bits - prefix);
  return network.value >> shift === ip.value >> shift;
}

/**
 * The dashboard is refused (403) from an address outside dashboard_allow. Probed on the droplet:
 * a request to its own non-loopback addresses comes from that address, so every address of the
 * droplet that dashboard_allow does not cover must be refused. (When dashboard_allow covers all
 * of them there is nothing outside the list to ask from, and the check has nothing to refuse.)
 */
export const dashboardRestricted: Check = {
  name: 'dashboard-restricted',
  appliesTo: host => Boolean(host.domains),
  probe: host =>
    `for ip in $(hostname -I); do case "$ip" in *:*) at="[$ip]" ;; *) at="$ip" ;; esac; ` +
    sh`printf '%s %s\\n' "$ip" "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 --cacert ${trustedCa(host)} --resolve "${host.domains!.dashboard}:443:$at" ${`https://${host.domains!.dashboard}/`})"; done`,
  verdict: (out, _code, host) => {
    const answered: string[] = [];
    for (const line of out.split('\n').filter(Boolean)) {
      const [address = '', status] = line.trim().split(' ');
      const allowed = ['127.0.0.1', '::1', ...host.dashboard_allow].some(cidr => cidrContains(cidr, address));
      if (!allowed && status !== '403') answered.push(`${address} got ${status === '000' || !status ? 'no answer' : status}`);
    }
    return answered.length ? `https://${host.domains!.dashboard}/ is not refused outside dashboard_allow: ${answered.join(', ')} (expected 403)` : undefined;
  },
};
