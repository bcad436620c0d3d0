import type { Check } from '../scripts/lib/check.ts';
import { sh } from '../scripts/lib/shell.ts';
import { siteLink } from '../scripts/lib/steps/nginx.ts';
import { domainList } from '../scripts/lib/facts/dns.ts';

/** `nginx -t` accepts the configuration, the site is enabled, and no other site claims its names. */
export const nginxConfig: Check = {
  name: 'nginx-config',
  appliesTo: host => Boolean(host.domains),
  probe: host => sh`[ -L ${siteLink(host)} ] || echo 'site not enabled'; nginx -t 2>&1`,
  verdict: (out, code, host) => {
    if (code !== 0) return `nginx -t fails:\n${out.trim()}`;
    if (out.includes('site not enabled')) return `${siteLink(host)} is missing: the site is not enabled`;
    const conflicts = out.split('\n').filter(l => /conflicting server name/.test(l) && domainList(host).some(d => l.includes(`"${d}"`)));
    if (conflicts.length) return `another nginx site claims this host's names, so one of them is ignored:\n${conflicts.join('\n')}`;
    return undefined;
  },
};
