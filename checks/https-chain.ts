import type { Check } from '../scripts/lib/check.ts';
import { script, sh } from '../scripts/lib/shell.ts';
import { domainList } from '../scripts/lib/facts/dns.ts';
import { trustedCa } from '../scripts/lib/facts/certificate.ts';

/**
 * Every domain answers over HTTPS through nginx (asked on the droplet, with the name resolved to
 * it), with a chain that verifies against the configured CA: the inventory's ca_bundle, else the
 * system's roots. A gateway error means nginx cannot reach the container behind it.
 */
export const httpsChain: Check = {
  name: 'https-chain',
  appliesTo: host => Boolean(host.domains),
  probe: host =>
    script`${sh`for d in ${domainList(host)}; do out=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 10 --cacert ${trustedCa(host)} --resolve "$d:443:127.0.0.1" "https://$d/" 2>&1); `}${
      sh`rc=$?; printf '%s %s %s\\n' "$d" "$rc" "$(printf '%s' "$out" | tr '\\n' ' ')"; done`}`,
  verdict: (out, _code, host) => {
    const problems: string[] = [];
    for (const domain of domainList(host)) {
      const line = out.split('\n').find(l => l.startsWith(`${domain} `));
      const [, rc, ...rest] = (line ?? '').split(' ');
      const text = rest.join(' ').trim();
      if (!line) problems.push(`${domain}: no answer`);
      else if (rc !== '0') problems.push(`${domain}: ${text.replace(/\s*000$/, '') || `curl exit ${rc}`}`);
      else if (/^50[234]$/.test(text)) problems.push(`${domain}: nginx answered ${text} (the container behind it does not answer)`);
    }
    return problems.length ? `HTTPS (verified against ${trustedCa(host)}) fails: ${problems.join('; ')}` : undefined;
  },
};
