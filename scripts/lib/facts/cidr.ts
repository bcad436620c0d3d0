// Addresses and CIDR ranges, IPv4 and IPv6: dashboard_allow, Docker's subnets, pg_hba's entries.

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

/** Whether a CIDR range lies wholly inside another (a range is inside itself). */
export function cidrCovers(outer: string, inner: string): boolean {
  const base = inner.split('/')[0]!;
  const bits = parseAddress(base)?.bits ?? 32;
  const prefix = (cidr: string) => Number(cidr.split('/')[1] ?? bits);
  return cidrContains(outer, base) && prefix(outer) <= prefix(inner);
}
