// nginx in front of the backend: one managed site file per instance in sites-available, linked
// from sites-enabled; no other site is ever touched. Before the certificate exists the site only
// answers ACME challenges on port 80 (files/nginx-site-http.conf); once it exists, the full HTTPS
// configuration (files/nginx-site.conf). A candidate configuration goes live only if `nginx -t`
// accepts it; otherwise the previous file is put back, nginx's message is shown, and the step
// fails. nginx is reloaded only after a change (a pending handler, so a run that dies before the
// reload still reloads on the next run).
import type { Host } from '../inventory.ts';
import type { Fact, Step } from '../step.ts';
import { STATE_DIR, pendingHandlers } from '../step.ts';
import type { Change, Handler } from '../plan.ts';
import { fileChanges, packageChanges, phase, skip, withHandler } from '../plan.ts';
import type { FileState, PathKind } from '../files.ts';
import { MANAGED_MARKER, fileFact, pathKindFact } from '../files.ts';
import type { Packages } from '../system.ts';
import { exitWhen, installedPackages, serviceScript } from '../system.ts';
import { renderTemplate, templateText } from '../templates.ts';
import type { Script } from '../shell.ts';
import { lines, script, sh } from '../shell.ts';
import type { CertificateState } from '../facts/certificate.ts';
import { certificateFact, certificatePaths } from '../facts/certificate.ts';
import { domainList } from '../facts/dns.ts';
import { maintenanceFlag, maintenanceOffHandler } from './maintenance.ts';

/** Where certbot places the HTTP-01 challenge files that nginx serves on port 80. */
export const ACME_WEBROOT = '/var/www/convex-ops-acme';

const siteName = (host: Host) => `convex-${host.instance_name}.conf`;
export const sitePath = (host: Host) => `/etc/nginx/sites-available/${siteName(host)}`;
export const siteLink = (host: Host) => `/etc/nginx/sites-enabled/${siteName(host)}`;

export const NGINX_RELOAD = 'nginx-reload';

/** How long nginx may take to put a started or reloaded configuration to work. */
const NGINX_SERVING_SECONDS = 10;

/**
 * A shell function printing the PIDs of the workers of nginx's master that accept connections.
 * A worker told to quit renames itself "worker process is shutting down" as it closes its
 * listening sockets, so it drops out of this list as it stops taking new connections. Only the
 * master's children count: nginx in a container on the droplet is not ours. Read from /proc,
 * since droplets need not have procps.
 */
const NGINX_WORKERS_FUNCTION = lines(
  sh`nginx_workers() {`,
  sh`  master=$(cat /run/nginx.pid 2>/dev/null) || return 0`,
  sh`  for cmdline in $(grep -lzsx 'nginx: worker process' /proc/[0-9]*/cmdline); do`,
  sh`    pid=\${cmdline#/proc/}; pid=\${pid%/cmdline}`,
  sh`    read -r _ _ _ ppid _ 2>/dev/null <"/proc/$pid/stat" && [ "$ppid" = "$master" ] && echo "$pid"`,
  sh`  done`,
  sh`  return 0`,
  sh`}`,
);

/**
 * Reloads nginx and succeeds only once the new configuration serves. A reload only signals the
 * master, which then reads the configuration, forks new workers and only after that tells the old
 * ones to stop accepting; until then a request can still meet the old configuration. So the
 * workers accepting before the reload are noted, and the script waits until none of them still
 * accepts and new ones do. One subshell, so it can be followed by `&& …`.
 */
export function reloadNginxScript(): Script {
  return lines(
    sh`(`,
    NGINX_WORKERS_FUNCTION,
    sh`old=" $(nginx_workers | tr '\\n' ' ') "`,
    script`${serviceScript('nginx', 'reload')} || exit 1`,
    sh`replaced() {`,
    sh`  current=$(nginx_workers)`,
    sh`  [ -n "$current" ] || return 1`,
    sh`  for pid in $current; do case "$old" in *" $pid "*) return 1;; esac; done`,
    sh`}`,
    exitWhen(sh`replaced`, NGINX_SERVING_SECONDS, `nginx did not replace its workers within ${NGINX_SERVING_SECONDS} s after reload, so the new configuration may not be serving yet`),
    sh`)`,
  );
}

/** Starts nginx (enabled at boot under systemd) and succeeds once its workers accept connections. */
export function startNginxScript(): Script {
  return lines(
    sh`(`,
    NGINX_WORKERS_FUNCTION,
    script`${serviceScript('nginx', 'enable-start')} || exit 1`,
    exitWhen(sh`[ -n "$(nginx_workers)" ]`, NGINX_SERVING_SECONDS, `nginx started no workers within ${NGINX_SERVING_SECONDS} s`),
    sh`)`,
  );
}

export interface NginxState { version?: string; running: boolean; ipv6: boolean }

export const nginxState: Fact<NginxState> = {
  key: 'nginx',
  command: sh`command -v nginx >/dev/null && nginx -v 2>&1; pidof nginx >/dev/null && echo running; [ -f /proc/net/if_inet6 ] && echo ipv6; true`,
  parse: out => ({
    version: /nginx\/(\d+\.\d+\.\d+)/.exec(out)?.[1],
    running: /^running$/m.test(out),
    ipv6: /^ipv6$/m.test(out),
  }),
};

/** `http2 on;` exists from nginx 1.25.1; older versions take http2 as a listen parameter. */
export function hasHttp2Directive(version: string | undefined): boolean {
  if (!version) return false;
  const [major = 0, minor = 0, patch = 0] = version.split('.').map(Number);
  return major > 1 || (major === 1 && (minor > 25 || (minor === 25 && patch >= 1)));
}

export interface SiteOptions {
  /** Whether the certificate exists: HTTPS configuration, or port 80 for ACME only. */
  certificate: boolean;
  nginxVersion?: string;
  ipv6: boolean;
  /** Whether the certificate names an OCSP responder, whose answers nginx then staples. */
  ocsp: boolean;
}

export const SITE_TEMPLATE = 'nginx-site.conf';
export const SITE_HTTP_TEMPLATE = 'nginx-site-http.conf';

/** The site file for a host: pure, from the templates in files/ (or CONVEX_OPS_FILES). */
export function renderSite(host: Host, opts: SiteOptions): string {
  if (!host.domains) throw new Error(`hosts.${host.name} has no [domains]`);
  const template = opts.certificate ? SITE_TEMPLATE : SITE_HTTP_TEMPLATE;
  const http2 = hasHttp2Directive(opts.nginxVersion);
  const both = (port: string) => (opts.ipv6 ? [port, `[::]:${port}`] : [port]);
  const { fullchain, privkey, chain } = certificatePaths(host);
  return renderTemplate(
    templateText(template),
    {
      managed: MANAGED_MARKER,
      instance: host.instance_name,
      api_domain: host.domains.api,
      site_domain: host.domains.site,
      dashboard_domain: host.domains.dashboard,
      webroot: ACME_WEBROOT,
      listen_http: both('80'),
      listen_https: both(http2 ? '443 ssl' : '443 ssl http2'),
      http2: http2 ? ['on'] : [],
      certificate: fullchain,
      certificate_key: privkey,
      // The chain verifies the stapled responses; nginx resolves the responder's name at start.
      ocsp_stapling: opts.ocsp ? ['ssl_stapling on;', 'ssl_stapling_verify on;', `ssl_trusted_certificate ${chain};`] : [],
      connection_upgrade: `$connection_upgrade_${host.instance_name.replace(/-/g, '_')}`,
      // The droplet itself (checks, SSH tunnels) and the inventory's list; nobody else.
      dashboard_allow: ['127.0.0.1', '::1', ...host.dashboard_allow],
      maintenance_flag: maintenanceFlag(host),
    },
    template,
  );
}

/**
 * A site change as the host makes it: the current file is kept aside, the candidate put in place
 * by `write` (the atomic write fileChanges planned; none when only the link is missing) and
 * linked, then `nginx -t`. If nginx rejects it, the previous file and link are put back exactly,
 * the reload the change armed is taken back unless it was pending before (`pendingBefore`, read
 * with the facts under the run lock), and the script fails with nginx's message. nginx itself is
 * not reloaded here: the live configuration only changes on the reload that follows a success.
 */
export function siteChangeScript(host: Host, opts: { write?: Script; pendingBefore: boolean }): Script {
  const site = sitePath(host);
  const link = siteLink(host);
  const previous = `/etc/nginx/sites-available/.${siteName(host)}.convex-ops-previous`;
  return lines(
    sh`set -e`,
    sh`rm -f ${previous}`,
    sh`if [ -f ${site} ]; then cp -p ${site} ${previous}; fi`,
    sh`old_link=$(readlink ${link} || true)`,
    opts.write ?? sh`:`,
    sh`ln -sfn ${site} ${link}`,
    sh`if out=$(nginx -t 2>&1); then rm -f ${previous}; exit 0; fi`,
    sh`if [ -f ${previous} ]; then mv -f ${previous} ${site}; else rm -f ${site}; fi`,
    sh`if [ -n "$old_link" ]; then ln -sfn "$old_link" ${link}; else rm -f ${link}; fi`,
    opts.pendingBefore ? sh`:` : sh`rm -f ${`${STATE_DIR}/pending/${NGINX_RELOAD}`}`,
    sh`echo ${`nginx rejected the new configuration, so ${site} was put back as it was and nginx keeps serving the previous one. nginx -t said:`} >&2`,
    // The error shows the last lines of stderr: nginx's own come last.
    sh`printf '%s\\n' "$out" | tail -n 12 >&2`,
    sh`exit 1`,
  );
}

export const reloadNginx: Handler = { name: NGINX_RELOAD, label: 'reload nginx', script: reloadNginxScript() };

const siteFacts = (host: Host) => ({
  nginx: nginxState,
  certificate: certificateFact(host),
  site: fileFact(sitePath(host)),
  link: pathKindFact(siteLink(host)),
  pending: pendingHandlers,
});

export interface SiteFacts { nginx: NginxState; certificate: CertificateState; site: FileState; link: PathKind; pending: string[] }

/**
 * The site file and its link as the certificate allows (HTTPS once it is usable), each change
 * tested by nginx before it stays; then nginx started, or reloaded when a change (or an earlier
 * run, or a new certificate) left the reload pending.
 */
export function planSite(facts: SiteFacts, host: Host): Change[] {
  const { nginx, certificate, site, link, pending } = facts;
  const path = sitePath(host);
  if (link !== 'absent' && !link.startsWith('link:')) {
    throw new Error(`${siteLink(host)} is a ${link}, not a link to ${path}. Move it away (it is another copy of this site), then run again; nothing was changed.`);
  }
  const content = renderSite(host, { certificate: certificate.usable, nginxVersion: nginx.version, ipv6: nginx.ipv6, ocsp: certificate.ocsp !== '' });
  const label = `${path} (${certificate.usable ? 'HTTPS' : 'HTTP, ACME challenges only'})`;
  const pendingBefore = pending.includes(NGINX_RELOAD);
  const changes = fileChanges(site, { path, content, mode: '644', label }, NGINX_RELOAD).map(change =>
    change.arms ? { ...change, script: siteChangeScript(host, { write: change.script, pendingBefore }) } : change,
  );
  if (link !== `link:${path}` && !changes.some(c => c.arms)) {
    changes.push({ label: `enable ${path} (link from sites-enabled)`, script: siteChangeScript(host, { pendingBefore }), arms: NGINX_RELOAD });
  }
  // A promotion killed inside its window left maintenance on: it goes off once the site serves.
  const served = nginx.running ? withHandler(changes, reloadNginx, pending) : [...changes, { label: 'start nginx', script: startNginxScript(), clears: NGINX_RELOAD }];
  return withHandler(served, maintenanceOffHandler(host), pending);
}

/** nginx itself and the folder certbot's challenges are served from. */
export function planNginxInstall(facts: { packages: Packages; webroot: PathKind }, host: Host): Change[] {
  if (!host.domains) skip(`hosts.${host.name} has no [domains]: there is nothing to put nginx in front of`);
  const webroot = { label: `create the ACME webroot ${ACME_WEBROOT}`, script: sh`mkdir -p -m 755 ${ACME_WEBROOT}` };
  return [...packageChanges(facts.packages, ['nginx']), ...(facts.webroot === 'absent' ? [webroot] : [])];
}

/** The site's phase, shared by nginx and letsencrypt (which switches it to HTTPS); `ok` says what a converged step reports. */
export function sitePhase(ok?: (facts: SiteFacts, host: Host) => string) {
  return phase({ facts: siteFacts, plan: planSite, ...(ok ? { ok } : {}) });
}

export const nginx: Step = {
  name: 'nginx',
  phases: [
    phase({ facts: () => ({ packages: installedPackages, webroot: pathKindFact(ACME_WEBROOT) }), plan: planNginxInstall }),
    sitePhase(({ certificate }, host) =>
      certificate.usable
        ? `${sitePath(host)} serves ${domainList(host).join(', ')} over HTTPS`
        : `${sitePath(host)} answers ACME challenges for ${domainList(host).join(', ')} (no certificate yet: run scripts/letsencrypt.ts)`,
    ),
  ],
};
