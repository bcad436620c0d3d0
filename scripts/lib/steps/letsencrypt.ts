// One certificate (--cert-name convex-<instance>) for all of a host's domains, from certbot of
// the distribution in webroot mode, then the site switched to HTTPS. No order is placed while
// the certificate covers every domain, was issued by the configured directory, verifies against
// the configured CA and has more than 30 days left; none either while a domain does not resolve
// to the droplet (the ACME server could not validate it). A private ACME server (acme.ca_bundle)
// is trusted through REQUESTS_CA_BUNDLE, for the order and for every renewal. Renewals run from
// certbot's own timer (systemd) or cron, with a deploy hook that reloads nginx.
import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import type { Host } from '../inventory.ts';
import type { Fact, Step } from '../step.ts';
import { pendingHandlers } from '../step.ts';
import type { Change } from '../plan.ts';
import { fileChanges, packageChanges, phase, skip, withHandler } from '../plan.ts';
import type { FileState } from '../files.ts';
import { fileFact, MANAGED_MARKER } from '../files.ts';
import type { Packages } from '../system.ts';
import { initSystem, installedPackages, serviceScript, SYSTEMD_RELOAD, systemdReload } from '../system.ts';
import { renderTemplate, templateText } from '../templates.ts';
import type { TemplateValue } from '../templates.ts';
import type { Script } from '../shell.ts';
import { lines, script, sh } from '../shell.ts';
import type { CertificateState } from '../facts/certificate.ts';
import { ACME_CA_PATH, certName, certificateFact, daysLeft, trustedCa } from '../facts/certificate.ts';
import type { DnsState } from '../facts/dns.ts';
import { dnsFact, domainList, misdirectedDomains } from '../facts/dns.ts';
import { ACME_WEBROOT, NGINX_RELOAD, reloadNginxScript, sitePath, sitePhase } from './nginx.ts';

export const DEPLOY_HOOK = '/etc/letsencrypt/renewal-hooks/deploy/convex-ops-reload-nginx';
export const RENEW_CRON = '/etc/cron.d/convex-ops-certbot';
export const RENEW_DROPIN = '/etc/systemd/system/certbot.service.d/convex-ops.conf';

/** No new order while the certificate has more than this left. */
export const RENEW_BEFORE_DAYS = 30;

export type CertificatePlan =
  | { order: false; reason: string }
  | { order: true; why: string; flags: string[] };

/** Whether to place an order, and with which flags: pure, from the certificate's state. */
export function planCertificate(host: Host, cert: CertificateState): CertificatePlan {
  const wanted = domainList(host);
  if (!cert.present) return { order: true, why: `no certificate ${certName(host)} yet`, flags: [] };
  const missing = wanted.filter(d => !cert.names.includes(d));
  if (missing.length) return { order: true, why: `add ${missing.join(', ')} to the certificate`, flags: ['--expand'] };
  if (cert.server !== host.acme.directory) {
    return { order: true, why: `the certificate comes from ${cert.server ?? 'an unknown ACME server'}, the inventory says ${host.acme.directory}`, flags: ['--force-renewal'] };
  }
  if (!cert.verified) return { order: true, why: `the certificate's chain does not verify against ${trustedCa(host)}`, flags: ['--force-renewal'] };
  const days = daysLeft(cert);
  if (days <= RENEW_BEFORE_DAYS) return { order: true, why: `the certificate has ${Math.max(days, 0)} days left`, flags: ['--force-renewal'] };
  const until = new Date(cert.notAfter! * 1000).toISOString().slice(0, 10);
  return { order: false, reason: `certificate ${certName(host)} covers ${wanted.join(', ')} until ${until} (${days} days)` };
}

/** Why the ACME server could not validate the domains, or undefined when they all point here. */
export function dnsProblem(host: Host, dns: DnsState): string | undefined {
  const problems = misdirectedDomains(host, dns, dns.self).map(({ name, elsewhere }) =>
    elsewhere.length ? `${name} resolves to ${elsewhere.join(', ')}, which is not this droplet` : `${name} does not resolve`,
  );
  if (!problems.length) return undefined;
  return (
    `no certificate was requested: ${problems.join('; ')} (the droplet's addresses: ${dns.self.join(', ') || 'none'}). ` +
    `Point an A record (and AAAA, if any) of each name at this droplet, wait for DNS to update, then run again.`
  );
}

/** Renewals are spread over the hour, the same minute for a host on every run. */
const renewMinute = (host: Host) => createHash('sha256').update(host.name).digest()[0]! % 60;

export interface RenewalState { cronRunning: boolean; timerActive: boolean }

export const renewalState: Fact<RenewalState> = {
  key: 'certbot-renewal',
  command: sh`pidof cron >/dev/null && echo cron; if [ "$(cat /proc/1/comm)" = systemd ] && systemctl is-active --quiet certbot.timer; then echo timer; fi; true`,
  parse: out => ({ cronRunning: /^cron$/m.test(out), timerActive: /^timer$/m.test(out) }),
};

/** What the renewal files (deploy hook, systemd drop-in, cron entry) are rendered with. */
export function renewalValues(host: Host): Record<string, TemplateValue> {
  // The reload script is several lines: a list value puts each on a line of its own (no value
  // may hold a line break).
  return { managed: MANAGED_MARKER, directory: host.acme.directory, ca_bundle: ACME_CA_PATH, minute: renewMinute(host), reload_nginx: reloadNginxScript().split('\n') };
}

/** certbot, openssl (the certificate fact reads with it) and, without systemd, cron for the renewals. */
export function planCertbotInstall(facts: { packages: Packages; init: 'systemd' | 'other' }, host: Host): Change[] {
  if (!host.domains) skip(`hosts.${host.name} has no [domains]: there is nothing to certify`);
  return packageChanges(facts.packages, facts.init === 'systemd' ? ['certbot', 'openssl'] : ['certbot', 'openssl', 'cron']);
}

export interface RenewalFacts {
  init: 'systemd' | 'other';
  renewal: RenewalState;
  bundle: FileState;
  hook: FileState;
  cron: FileState;
  dropin: FileState;
  pending: string[];
}

/** certbot's renewals: its timer (systemd) or cron, trusting the CA bundle, then reloading nginx. */
export function planRenewal(facts: RenewalFacts, host: Host): Change[] {
  const values = renewalValues(host);
  const render = (template: string) => renderTemplate(templateText(template), values, template);
  const changes: Change[] = [];
  if (host.acme.ca_bundle) {
    const bundle = readFileSync(host.acme.ca_bundle, 'utf8').trim();
    const content = `# ${MANAGED_MARKER}: hosts.${host.name}.acme.ca_bundle (${host.acme.ca_bundle}), the CA of ${host.acme.directory}.\n${bundle}\n`;
    changes.push(...fileChanges(facts.bundle, { path: ACME_CA_PATH, content, mode: '644', label: 'the ACME CA bundle' }));
  }
  changes.push(...fileChanges(facts.hook, { path: DEPLOY_HOOK, content: render('certbot-deploy-hook.sh'), mode: '755', label: 'the certbot deploy hook' }));
  if (facts.init === 'systemd') {
    if (host.acme.ca_bundle) {
      const dropin = fileChanges(facts.dropin, { path: RENEW_DROPIN, content: render('certbot-systemd.conf'), mode: '644', label: 'certbot.service drop-in (CA bundle)' }, SYSTEMD_RELOAD);
      changes.push(...withHandler(dropin, systemdReload, facts.pending));
    }
    if (!facts.renewal.timerActive) changes.push({ label: 'enable certbot.timer', script: sh`systemctl enable --now certbot.timer` });
    return changes;
  }
  // Without systemd, certbot's package renews from /etc/cron.d/certbot: cron must run.
  if (host.acme.ca_bundle) changes.push(...fileChanges(facts.cron, { path: RENEW_CRON, content: render('certbot-renew.cron'), mode: '644', label: RENEW_CRON }));
  if (!facts.renewal.cronRunning) changes.push({ label: 'start cron (certbot renews from it)', script: serviceScript('cron', 'start') });
  return changes;
}

function certbotCommand(host: Host, flags: string[]): Script {
  const command = sh`certbot certonly --non-interactive --agree-tos --no-eff-email -m ${host.acme.email!} --server ${host.acme.directory} --webroot -w ${ACME_WEBROOT} --cert-name ${certName(host)} ${domainList(host).flatMap(d => ['-d', d])} ${flags}`;
  return host.acme.ca_bundle ? script`${sh`REQUESTS_CA_BUNDLE=${ACME_CA_PATH}`} ${command}` : command;
}

/**
 * The order, in one command: refused when no site answers the challenges on port 80 (an earlier
 * step of the same run makes it, so only the host can tell), then certbot (its output on stderr,
 * shown as progress), then the certificate read again, on stdout, for the check that follows.
 */
function orderScript(host: Host, flags: string[]): Script {
  const missing = `${sitePath(host)} is missing, so nothing answers the ACME challenges on port 80. Run scripts/nginx.ts first (scripts/letsencrypt.ts runs it for you).`;
  return lines(sh`[ -f ${sitePath(host)} ] || { echo ${missing} >&2; exit 1; }`, script`${certbotCommand(host, flags)} >&2 || exit 1`, script`( ${certificateFact(host).command}\n)`);
}

/** The order the certificate needs, if any; refused while a domain does not lead to this droplet. */
export function planOrder(facts: { certificate: CertificateState; dns: DnsState }, host: Host): Change[] {
  const plan = planCertificate(host, facts.certificate);
  if (!plan.order) return [];
  const problem = dnsProblem(host, facts.dns);
  if (problem) throw new Error(problem);
  return [
    {
      label: `order a certificate for ${domainList(host).join(', ')} from ${host.acme.directory} (${plan.why})`,
      script: orderScript(host, plan.flags),
      streams: true,
      // The new certificate is loaded by the reload that follows; if this run dies first, the next one reloads.
      arms: NGINX_RELOAD,
      after: stdout => {
        const after = planCertificate(host, certificateFact(host).parse(stdout, 0));
        if (after.order) throw new Error(`certbot finished, but the certificate is still not right: ${after.why}. See /var/log/letsencrypt/letsencrypt.log on the droplet.`);
      },
    },
  ];
}

export const letsencrypt: Step = {
  name: 'letsencrypt',
  phases: [
    phase({ facts: () => ({ packages: installedPackages, init: initSystem }), plan: planCertbotInstall }),
    // After the packages: certbot's own timer is enabled by its installation.
    phase({
      facts: () => ({
        init: initSystem,
        renewal: renewalState,
        bundle: fileFact(ACME_CA_PATH),
        hook: fileFact(DEPLOY_HOOK),
        cron: fileFact(RENEW_CRON),
        dropin: fileFact(RENEW_DROPIN),
        pending: pendingHandlers,
      }),
      plan: planRenewal,
    }),
    phase({
      facts: (host: Host) => ({ certificate: certificateFact(host), dns: dnsFact(host), init: initSystem }),
      plan: planOrder,
      ok: ({ certificate, init }, host) => {
        const plan = planCertificate(host, certificate);
        return `${plan.order ? plan.why : plan.reason}; renewals by certbot's ${init === 'systemd' ? 'timer' : 'cron job'}`;
      },
    }),
    // With the certificate in place the site becomes HTTPS (a single run goes all the way).
    sitePhase(),
  ],
};
