// What HTTPS needs: the domains resolving to this droplet, and a certificate that covers them and
// is renewed in time.
import type { Host } from '../inventory.ts';
import type { DoctorState } from './facts.ts';
import { Findings, run } from './rule.ts';
import type { Context, Finding } from './rule.ts';
import { domainList, misdirectedDomains } from '../facts/dns.ts';
import { certName, certificatePaths, daysLeft } from '../facts/certificate.ts';

export function dns(host: Host, state: DoctorState, context: Context): Finding[] {
  if (!host.domains) return [];
  const found = new Findings(context.found);
  for (const { name, elsewhere } of misdirectedDomains(host, state.dns, [...state.dns.self, host.address])) {
    if (elsewhere.length === 0) {
      found.add(`dns-${name}`, 'problem', `${name} does not resolve, so Let's Encrypt cannot validate it and browsers cannot reach the backend`, `create an A record for ${name} pointing at ${host.address}, wait for it to propagate, then ${run(host, 'letsencrypt')}`);
    } else {
      found.add(`dns-${name}`, 'problem', `${name} resolves to ${elsewhere.join(', ')}, not to this droplet (${host.address}), so certificates cannot be issued for it and clients reach another machine`, `point the A (and AAAA) record of ${name} at ${host.address} and remove other records, then ${run(host, 'letsencrypt')}`);
    }
  }
  return found.list();
}

export function certificate(host: Host, state: DoctorState, context: Context): Finding[] {
  const cert = state.cert;
  if (!cert || cert.notAfter === undefined || cert.now === undefined) return [];
  const found = new Findings(context.found);
  const days = daysLeft(cert);
  const until = new Date(cert.notAfter * 1000).toISOString().slice(0, 10);
  const path = certificatePaths(host).cert;
  if (days < 21) {
    found.add(
      'cert-expiry',
      'problem',
      days < 0 ? `the certificate ${path} expired on ${until}: browsers and the Convex client refuse the backend` : `the certificate ${path} expires in ${days} days (${until}) and was not renewed (certbot renews at 30 days left), so renewal is failing`,
      `run certbot renew --cert-name ${certName(host)} on the droplet to see why (often DNS or port 80), fix that, then ${run(host, 'letsencrypt')}`,
    );
  } else if (days < 30) {
    found.add('cert-expiry', 'warning', `the certificate ${path} expires in ${days} days (${until}); certbot should renew it now`, `if it is still not renewed in a few days, run certbot renew --cert-name ${certName(host)} on the droplet`);
  }
  const missing = domainList(host).filter(n => !cert.names.includes(n));
  if (missing.length && cert.names.length) found.add('cert-names', 'problem', `the certificate does not cover ${missing.join(', ')}`, `${run(host, 'letsencrypt')} expands it`);
  return found.list();
}
