// One certificate (--cert-name convex-<instance>) for all of a host's domains, from certbot of
// the distribution in webroot mode, then the site switched to HTTPS. No order is placed while
// the certificate covers every domain, was issued by the configured directory, verifies against
// the configured CA and has more than 30 days left. A private ACME server (acme.ca_bundle) is
// trusted through REQUESTS_CA_BUNDLE, for the order and for every renewal. Renewals run from
// certbot's own timer (systemd) or cron, with a deploy hook that reloads nginx.
import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import type { Host } from '../inventory.ts';
import type { Fact, Step, StepContext } from '../step.ts';
import { ensureFile, fileFact, MANAGED_MARKER } from '../files.ts';
import { ensurePackages, initSystem, installedPackages, serviceScript, SYSTEMD_RELOAD } from '../system.ts';
import { renderTemplate, templateText } from '../templates.ts';
import type { TemplateValue } from '../templates.ts';
import { sh } from '../shell.ts';
import { ACME_WEBROOT, NGINX_RELOAD, applySite, certName, certificatePaths, domainList, ensureNginxServing, nginxState, reloadNginxScript, certificatePresent, sitePath, siteLink } from './nginx.ts';
import { pathKindFact } from '../files.ts';

/** The operator's CA bundle, on the droplet: what certbot trusts for a private ACME server. */
export const ACME_CA_PATH = '/etc/convex-ops/acme-ca.pem';
export const DEPLOY_HOOK = '/etc/letsencrypt/renewal-hooks/deploy/convex-ops-reload-nginx';
export const RENEW_CRON = '/etc/cron.d/convex-ops-certbot';
export const RENEW_DROPIN = '/etc/systemd/system/certbot.service.d/convex-ops.conf';
const SYSTEM_ROOTS = '/etc/ssl/certs/ca-certificates.crt';

/** No new order while the certificate has more than this left. */
export const RENEW_BEFORE_DAYS = 30;

/** The CA file a host's certificate (and its ACME server) is verified against, on the droplet. */
export const trustedCa = (host: Host) => (host.acme.ca_bundle ? ACME_CA_PATH : SYSTEM_ROOTS);

export interface CertificateState {
  present: boolean;
  /** Seconds since the epoch, by the droplet's clock. */
  notAfter?: number;
  now?: number;
  names: string[];
  /** The chain verifies against the configured CA. */
  verified: boolean;
  /** The ACME directory certbot renews from (its renewal configuration). */
  server?: string;
}

export function certificateFact(host: Host): Fact<CertificateState> {
  const { cert, chain } = certificatePaths(host);
  const renewal = `/etc/letsencrypt/renewal/${certName(host)}.conf`;
  return {
    key: `certificate:${certName(host)}:${trustedCa(host)}`,
    command: [
      sh`[ -f ${cert} ] || exit 0`,
      'echo present',
      sh`echo "end $(date -d "$(openssl x509 -in ${cert} -noout -enddate | cut -d= -f2)" +%s)"`,
      'echo "now $(date +%s)"',
      sh`openssl x509 -in ${cert} -noout -ext subjectAltName | tr ',' '\n' | sed -n 's/^ *DNS:/name /p'`,
      sh`if openssl verify -CAfile ${trustedCa(host)} -untrusted ${chain} ${cert} >/dev/null 2>&1; then echo verified; fi`,
      sh`sed -n 's/^server *= *//p' ${renewal} | sed 's/^/server /'`,
      'true',
    ].join('\n'),
    parse: out => {
      const lines = out.split('\n').map(l => l.trim());
      const value = (key: string) => lines.find(l => l.startsWith(`${key} `))?.slice(key.length + 1);
      const number = (key: string) => (value(key) && /^\d+$/.test(value(key)!) ? Number(value(key)) : undefined);
      return {
        present: lines.includes('present'),
        notAfter: number('end'),
        now: number('now'),
        names: lines.filter(l => l.startsWith('name ')).map(l => l.slice(5)),
        verified: lines.includes('verified'),
        server: value('server'),
      };
    },
  };
}

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
  const daysLeft = cert.notAfter !== undefined && cert.now !== undefined ? Math.floor((cert.notAfter - cert.now) / 86400) : -1;
  if (daysLeft <= RENEW_BEFORE_DAYS) return { order: true, why: `the certificate has ${Math.max(daysLeft, 0)} days left`, flags: ['--force-renewal'] };
  const until = new Date(cert.notAfter! * 1000).toISOString().slice(0, 10);
  return { order: false, reason: `certificate ${certName(host)} covers ${wanted.join(', ')} until ${until} (${daysLeft} days)` };
}

export interface DnsState { domains: Map<string, string[]>; self: string[] }

export function dnsFact(host: Host): Fact<DnsState> {
  return {
    key: `dns:${domainList(host).join(',')}`,
    waits: true,
    command:
      sh`for d in ${domainList(host)}; do printf 'dns %s' "$d"; for a in $(getent ahosts "$d" | awk '{print $1}' | sort -u); do printf ' %s' "$a"; done; echo; done; ` +
      `printf 'self'; for a in $(hostname -I); do printf ' %s' "$a"; done; echo`,
    parse: out => {
      const domains = new Map<string, string[]>();
      let self: string[] = [];
      for (const line of out.split('\n')) {
        const [kind, ...rest] = line.trim().split(/\s+/);
        if (kind === 'dns' && rest[0]) domains.set(rest[0], rest.slice(1));
        if (kind === 'self') self = rest;
      }
      return { domains, self };
    },
  };
}

/** Why the ACME server could not validate the domains, or undefined when they all point here. */
export function dnsProblem(host: Host, dns: DnsState): string | undefined {
  const problems: string[] = [];
  for (const domain of domainList(host)) {
    const addresses = dns.domains.get(domain) ?? [];
    const elsewhere = addresses.filter(a => !dns.self.includes(a));
    if (addresses.length === 0) problems.push(`${domain} does not resolve`);
    else if (elsewhere.length) problems.push(`${domain} resolves to ${elsewhere.join(', ')}, which is not this droplet`);
  }
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
  command: `pidof cron >/dev/null && echo cron; if [ "$(cat /proc/1/comm)" = systemd ] && systemctl is-active --quiet certbot.timer; then echo timer; fi; true`,
  parse: out => ({ cronRunning: /^cron$/m.test(out), timerActive: /^timer$/m.test(out) }),
};

/** What the renewal files (deploy hook, systemd drop-in, cron entry) are rendered with. */
export function renewalValues(host: Host): Record<string, TemplateValue> {
  // The reload script is several lines: a list value puts each on a line of its own (no value
  // may hold a line break).
  return { managed: MANAGED_MARKER, directory: host.acme.directory, ca_bundle: ACME_CA_PATH, minute: renewMinute(host), reload_nginx: reloadNginxScript().split('\n') };
}

/** certbot's renewals: its timer (systemd) or cron, trusting the CA bundle, then reloading nginx. */
async function ensureRenewal(ctx: StepContext): Promise<void> {
  const { host } = ctx;
  const init = await ctx.fact(initSystem);
  const values = renewalValues(host);
  await ensureFile(ctx, { path: DEPLOY_HOOK, content: renderTemplate(templateText('certbot-deploy-hook.sh'), values, 'certbot-deploy-hook.sh'), mode: '755', label: 'the certbot deploy hook' });
  if (init === 'systemd') {
    if (host.acme.ca_bundle) {
      const content = renderTemplate(templateText('certbot-systemd.conf'), values, 'certbot-systemd.conf');
      const state = await ctx.fact(fileFact(RENEW_DROPIN));
      if (state.kind !== 'file' || state.content !== content) await ctx.markPending(SYSTEMD_RELOAD);
      await ensureFile(ctx, { path: RENEW_DROPIN, content, mode: '644', label: 'certbot.service drop-in (CA bundle)' });
      await ctx.runPending(SYSTEMD_RELOAD, 'reload systemd units', 'systemctl daemon-reload');
    }
    const renewal = await ctx.fact(renewalState);
    if (!renewal.timerActive) await ctx.change('enable certbot.timer', () => ctx.run('systemctl enable --now certbot.timer', 'enable certbot.timer'));
    return;
  }
  // Without systemd, certbot's package renews from /etc/cron.d/certbot: cron must run.
  if (host.acme.ca_bundle) {
    await ensureFile(ctx, { path: RENEW_CRON, content: renderTemplate(templateText('certbot-renew.cron'), values, 'certbot-renew.cron'), mode: '644', label: RENEW_CRON });
  }
  const renewal = await ctx.fact(renewalState);
  if (!renewal.cronRunning) await ctx.change('start cron (certbot renews from it)', () => ctx.run(serviceScript('cron', 'start'), 'start cron'));
}

function certbotCommand(host: Host, flags: string[]): string {
  const command = sh`certbot certonly --non-interactive --agree-tos --no-eff-email -m ${host.acme.email!} --server ${host.acme.directory} --webroot -w ${ACME_WEBROOT} --cert-name ${certName(host)} ${domainList(host).flatMap(d => ['-d', d])} ${flags}`;
  return host.acme.ca_bundle ? `REQUESTS_CA_BUNDLE=${ACME_CA_PATH} ${command}` : command;
}

export const letsencrypt: Step = {
  name: 'letsencrypt',
  facts: host => [
    installedPackages,
    initSystem,
    renewalState,
    certificateFact(host),
    dnsFact(host),
    fileFact(ACME_CA_PATH),
    fileFact(DEPLOY_HOOK),
    fileFact(RENEW_CRON),
    fileFact(RENEW_DROPIN),
    nginxState,
    certificatePresent(host),
    fileFact(sitePath(host)),
    pathKindFact(siteLink(host)),
  ],
  async run(ctx) {
    const { host } = ctx;
    if (!host.domains) ctx.skip(`hosts.${host.name} has no [domains]: there is nothing to certify`);
    const init = await ctx.fact(initSystem);
    await ensurePackages(ctx, init === 'systemd' ? ['certbot', 'openssl'] : ['certbot', 'openssl', 'cron']);
    if (host.acme.ca_bundle) {
      const bundle = readFileSync(host.acme.ca_bundle, 'utf8').trim();
      await ensureFile(ctx, {
        path: ACME_CA_PATH,
        content: `# ${MANAGED_MARKER}: hosts.${host.name}.acme.ca_bundle (${host.acme.ca_bundle}), the CA of ${host.acme.directory}.\n${bundle}\n`,
        mode: '644',
        label: 'the ACME CA bundle',
      });
    }
    await ensureRenewal(ctx);

    const plan = planCertificate(host, await ctx.fact(certificateFact(host)));
    if (plan.order) {
      if (ctx.check) {
        ctx.changes.push(`order a certificate for ${domainList(host).join(', ')} from ${host.acme.directory} (${plan.why})`);
      } else {
        if ((await ctx.fact(fileFact(sitePath(host)))).kind !== 'file') {
          throw new Error(`${sitePath(host)} is missing, so nothing answers the ACME challenges on port 80. Run scripts/nginx.ts first (scripts/letsencrypt.ts runs it for you).`);
        }
        const problem = dnsProblem(host, await ctx.fact(dnsFact(host)));
        if (problem) throw new Error(problem);
        // The new certificate is loaded by the reload that follows; if this run dies first, the next one reloads.
        await ctx.markPending(NGINX_RELOAD);
        await ctx.change(`order a certificate for ${domainList(host).join(', ')} from ${host.acme.directory} (${plan.why})`, () =>
          ctx.run(certbotCommand(host, plan.flags), 'certbot certonly', { onOutput: chunk => ctx.progress(chunk) }),
        );
        const after = planCertificate(host, await ctx.fact(certificateFact(host)));
        if (after.order) throw new Error(`certbot finished, but the certificate is still not right: ${after.why}. See /var/log/letsencrypt/letsencrypt.log on the droplet.`);
      }
    }
    // With the certificate in place the site becomes HTTPS (a single run goes all the way).
    await applySite(ctx);
    await ensureNginxServing(ctx);
    return plan.order ? undefined : `${plan.reason}; renewals by certbot's ${init === 'systemd' ? 'timer' : 'cron job'}`;
  },
};
