// The host's certificate: one (certbot's --cert-name convex-<instance>) for all its domains.
// letsencrypt decides from it whether to order, nginx whether to serve HTTPS, doctor whether
// renewals work; the checks know where it lies and what verifies it.
import type { Host } from '../inventory.ts';
import type { Fact } from '../step.ts';
import { lines, sh } from '../shell.ts';

export const certName = (host: Host) => `convex-${host.instance_name}`;

export function certificatePaths(host: Host): { dir: string; fullchain: string; privkey: string; cert: string; chain: string } {
  const dir = `/etc/letsencrypt/live/${certName(host)}`;
  return { dir, fullchain: `${dir}/fullchain.pem`, privkey: `${dir}/privkey.pem`, cert: `${dir}/cert.pem`, chain: `${dir}/chain.pem` };
}

/** The operator's CA bundle, on the droplet: what certbot trusts for a private ACME server. */
export const ACME_CA_PATH = '/etc/convex-ops/acme-ca.pem';
const SYSTEM_ROOTS = '/etc/ssl/certs/ca-certificates.crt';

/** The CA file a host's certificate (and its ACME server) is verified against, on the droplet. */
export const trustedCa = (host: Host) => (host.acme.ca_bundle ? ACME_CA_PATH : SYSTEM_ROOTS);

export interface CertificateState {
  present: boolean;
  /** The full chain and the key nginx is configured with are both there, not empty. */
  usable: boolean;
  /** Seconds since the epoch, by the droplet's clock. */
  notAfter?: number;
  now?: number;
  names: string[];
  /** The chain verifies against the configured CA. */
  verified: boolean;
  /** The ACME directory certbot renews from (its renewal configuration). */
  server?: string;
  /**
   * The OCSP responder URL ('' when it names none). nginx staples responses only when there is
   * one: it warns at every start about a certificate without it, and Let's Encrypt stopped putting
   * it in certificates in 2025 (as pebble does in the tests).
   */
  ocsp: string;
}

export function certificateFact(host: Host): Fact<CertificateState> {
  const { cert, chain, fullchain, privkey } = certificatePaths(host);
  const renewal = `/etc/letsencrypt/renewal/${certName(host)}.conf`;
  return {
    key: `certificate:${certName(host)}:${trustedCa(host)}`,
    command: lines(
      sh`if [ -s ${fullchain} ] && [ -s ${privkey} ]; then echo usable; fi`,
      sh`[ -f ${cert} ] || exit 0`,
      sh`echo present`,
      sh`echo "end $(date -d "$(openssl x509 -in ${cert} -noout -enddate | cut -d= -f2)" +%s)"`,
      sh`echo "now $(date +%s)"`,
      sh`openssl x509 -in ${cert} -noout -ext subjectAltName | tr ',' '\n' | sed -n 's/^ *DNS:/name /p'`,
      sh`if openssl verify -CAfile ${trustedCa(host)} -untrusted ${chain} ${cert} >/dev/null 2>&1; then echo verified; fi`,
      sh`openssl x509 -in ${cert} -noout -ocsp_uri 2>/dev/null | sed 's/^/ocsp /'`,
      sh`sed -n 's/^server *= *//p' ${renewal} | sed 's/^/server /'`,
      sh`true`,
    ),
    parse: out => {
      const lines = out.split('\n').map(l => l.trim());
      const value = (key: string) => lines.find(l => l.startsWith(`${key} `))?.slice(key.length + 1);
      const number = (key: string) => (/^\d+$/.test(value(key) ?? '') ? Number(value(key)) : undefined);
      return {
        present: lines.includes('present'),
        usable: lines.includes('usable'),
        notAfter: number('end'),
        now: number('now'),
        names: lines.filter(l => l.startsWith('name ')).map(l => l.slice(5)),
        verified: lines.includes('verified'),
        server: value('server'),
        ocsp: value('ocsp') ?? '',
      };
    },
  };
}

/** Whole days the certificate has left by the droplet's clock (-1 when that could not be read). */
export function daysLeft(cert: CertificateState): number {
  return cert.notAfter !== undefined && cert.now !== undefined ? Math.floor((cert.notAfter - cert.now) / 86400) : -1;
}
