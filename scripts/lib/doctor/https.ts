// What HTTPS needs: the domains resolving to this droplet, and a certificate that covers them and
// is renewed in time.
import type { Host } from '../inventory.ts';
import type { DoctorState } from './facts.ts';
import { Findings, run } from './rule.ts';
import type { Context, Finding } from './rule.ts';

export function dns(host: Host, state: DoctorState, context: Context): Finding[] {
  if (!host.domains) return [];
  const found = new Findings(context.found);
  const mine = new Set([...state.dns.self, host.address]);
  for (const name of [host.domains.api, host.domains.site, host.domains.dashboard]) {
    const addresses = state.dns.names.get(name) ?? [];
    const elsewhere = addresses.filter(a => !mine.has(a));
    if (addresses.length === 0) {
      found.add(`dns-${name}`, 'problem', `${name} does not resolve, so Let's Encrypt cannot validate it and browsers cannot reach the backend`, `create an A record for ${name} pointing at ${host.address}, wait for it to propagate, then ${run(host, 'letsencrypt')}`);
    } else if (elsewhere.length) {
      found.add(`dns-${name}`, 'problem', `${name} resolves to ${elsewhere.join(', ')}, not to this droplet (${host.address}), so certificates cannot be issued for it and clients reach another machine`, `point the A (and AAAA) record of ${name} at ${host.address} and remove other records, then ${run(host, 'letsencrypt')}`);
    }
  }
  return found.list();
}

export function certificate(host: Host, state: DoctorState, context: Context): Finding[] {
  const cert = state.cert;
  if (!cert || cert.notAfter === undefined || cert.now === undefined) return [];
  const found = new Findings(context.found);
  const days = Math.floor((cert.notAfter - cert.now) / 86400);
  const until = new Date(cert.notAfter * 1000).toISOString().slice(0, 10);
  if (days < 21) {
    found.add(
      'cert-expiry',
      'problem',
      days < 0 ? `the certificate ${cert.path} expired on ${until}: browsers and the Convex client refuse the backend` : `the certificate ${cert.path} expires in ${days} days (${until}) and was not renewed (certbot renews at 30 days left), so renewal is failing`,
      `run certbot renew --cert-name convex-${host.instance_name} on the droplet to see why (often DNS or port 80), fix that, then ${run(host, 'letsencrypt')}`,
    );
  } else if (days < 30) {
    found.add('cert-expiry', 'warning', `the certificate ${cert.path} expires in ${days} days (${until}); certbot should renew it now`, `if it is still not renewed in a few days, run certbot renew --cert-name convex-${host.instance_name} on the droplet`);
  }
  const missing = host.domains ? [host.domains.api, host.domains.site, host.domains.dashboard].filter(n => !cert.names.includes(n)) : [];
  if (missing.length && cert.names.length) found.add('cert-names', 'problem', `the certificate does not cover ${missing.join(', ')}`, `${run(host, 'letsencrypt')} expands it`);
  return found.list();
}
