import type { Check } from '../scripts/lib/check.ts';
import { sh } from '../scripts/lib/shell.ts';
import { certificatePaths } from '../scripts/lib/facts/certificate.ts';

const DAYS = 14;

/** The certificate has more than 14 days left (renewal starts at 30: less means renewals fail). */
export const certificateExpiry: Check = {
  name: 'certificate-expiry',
  appliesTo: host => Boolean(host.domains),
  probe: host => sh`openssl x509 -in ${certificatePaths(host).cert} -noout -enddate && openssl x509 -in ${certificatePaths(host).cert} -noout -checkend ${DAYS * 86400}`,
  verdict: (out, code, host) => {
    const end = /notAfter=(.*)/.exec(out)?.[1]?.trim();
    if (!end) return `no certificate at ${certificatePaths(host).cert}`;
    return code === 0 ? undefined : `the certificate expires ${end}, in less than ${DAYS} days: renewals are failing (see /var/log/letsencrypt/letsencrypt.log)`;
  },
};
