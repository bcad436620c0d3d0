import type { Check } from '../scripts/lib/check.ts';
import { script, sh } from '../scripts/lib/shell.ts';
import { trustedCa } from '../scripts/lib/facts/certificate.ts';
import { cidrContains } from '../scripts/lib/facts/cidr.ts';

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
    script`${sh`for ip in $(hostname -I); do case "$ip" in *:*) at="[$ip]" ;; *) at="$ip" ;; esac; `}${
      sh`printf '%s %s\\n' "$ip" "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 --cacert ${trustedCa(host)} --resolve "${host.domains!.dashboard}:443:$at" ${`https://${host.domains!.dashboard}/`})"; done`}`,
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
