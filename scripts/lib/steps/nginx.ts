// nginx in front of the backend: one managed site file per instance in sites-available, linked
// from sites-enabled; no other site is ever touched. Before the certificate exists the site only
// answers ACME challenges on port 80 (files/nginx-site-http.conf); once it exists, the full HTTPS
// configuration (files/nginx-site.conf). A candidate configuration goes live only if `nginx -t`
// accepts it; otherwise the previous file is put back, nginx's message is shown, and the step
// fails. nginx is reloaded only after a change (a pending handler, so a run that dies before the
// reload still reloads on the next run).
import type { Host } from '../inventory.ts';
import type { Fact, Step, StepContext } from '../step.ts';
import { STATE_DIR } from '../step.ts';
import { MANAGED_MARKER, atomicWriteScript, fileFact, pathKindFact, unifiedDiff } from '../files.ts';
import { ensurePackages, exitWhen, installedPackages, serviceScript } from '../system.ts';
import { renderTemplate, templateText } from '../templates.ts';
import { sh } from '../shell.ts';

/** Where certbot places the HTTP-01 challenge files that nginx serves on port 80. */
export const ACME_WEBROOT = '/var/www/convex-ops-acme';

const siteName = (host: Host) => `convex-${host.instance_name}.conf`;
export const sitePath = (host: Host) => `/etc/nginx/sites-available/${siteName(host)}`;
export const siteLink = (host: Host) => `/etc/nginx/sites-enabled/${siteName(host)}`;

/** One certificate (certbot's --cert-name) for all of a host's domains. */
export const certName = (host: Host) => `convex-${host.instance_name}`;
export function certificatePaths(host: Host): { dir: string; fullchain: string; privkey: string; cert: string; chain: string } {
  const dir = `/etc/letsencrypt/live/${certName(host)}`;
  return { dir, fullchain: `${dir}/fullchain.pem`, privkey: `${dir}/privkey.pem`, cert: `${dir}/cert.pem`, chain: `${dir}/chain.pem` };
}

export const domainList = (host: Host): string[] => (host.domains ? [host.domains.api, host.domains.site, host.domains.dashboard] : []);

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
const NGINX_WORKERS_FUNCTION = [
  'nginx_workers() {',
  '  master=$(cat /run/nginx.pid 2>/dev/null) || return 0',
  `  for cmdline in $(grep -lzsx 'nginx: worker process' /proc/[0-9]*/cmdline); do`,
  '    pid=${cmdline#/proc/}; pid=${pid%/cmdline}',
  '    read -r _ _ _ ppid _ 2>/dev/null <"/proc/$pid/stat" && [ "$ppid" = "$master" ] && echo "$pid"',
  '  done',
  '  return 0',
  '}',
].join('\n');

/**
 * Reloads nginx and succeeds only once the new configuration serves. A reload only signals the
 * master, which then reads the configuration, forks new workers and only after that tells the old
 * ones to stop accepting; until then a request can still meet the old configuration. So the
 * workers accepting before the reload are noted, and the script waits until none of them still
 * accepts and new ones do. One subshell, so it can be followed by `&& …`.
 */
export function reloadNginxScript(): string {
  return [
    '(',
    NGINX_WORKERS_FUNCTION,
    `old=" $(nginx_workers | tr '\\n' ' ') "`,
    `${serviceScript('nginx', 'reload')} || exit 1`,
    'replaced() {',
    '  current=$(nginx_workers)',
    '  [ -n "$current" ] || return 1',
    '  for pid in $current; do case "$old" in *" $pid "*) return 1;; esac; done',
    '}',
    exitWhen('replaced', NGINX_SERVING_SECONDS, `nginx did not replace its workers within ${NGINX_SERVING_SECONDS} s after reload, so the new configuration may not be serving yet`),
    ')',
  ].join('\n');
}

/** Starts nginx (enabled at boot under systemd) and succeeds once its workers accept connections. */
export function startNginxScript(): string {
  return [
    '(',
    NGINX_WORKERS_FUNCTION,
    `${serviceScript('nginx', 'enable-start')} || exit 1`,
    exitWhen('[ -n "$(nginx_workers)" ]', NGINX_SERVING_SECONDS, `nginx started no workers within ${NGINX_SERVING_SECONDS} s`),
    ')',
  ].join('\n');
}

export interface NginxState { version?: string; running: boolean; ipv6: boolean }

export const nginxState: Fact<NginxState> = {
  key: 'nginx',
  command: `command -v nginx >/dev/null && nginx -v 2>&1; pidof nginx >/dev/null && echo running; [ -f /proc/net/if_inet6 ] && echo ipv6; true`,
  parse: out => ({
    version: /nginx\/(\d+\.\d+\.\d+)/.exec(out)?.[1],
    running: /^running$/m.test(out),
    ipv6: /^ipv6$/m.test(out),
  }),
};

export function certificatePresent(host: Host): Fact<boolean> {
  const { fullchain, privkey } = certificatePaths(host);
  return { key: `cert-files:${certName(host)}`, command: sh`[ -s ${fullchain} ] && [ -s ${privkey} ] && echo yes`, parse: out => out.trim() === 'yes' };
}

/**
 * The certificate's OCSP responder URL ('' when it has none, or there is no certificate yet).
 * Stapling is configured only when there is one: nginx warns at every start about a certificate
 * without it, and Let's Encrypt stopped putting it in certificates in 2025 (as pebble does in
 * the tests), while a CA that still runs OCSP gets its responses stapled.
 */
export function ocspResponder(host: Host): Fact<string> {
  const { cert } = certificatePaths(host);
  return { key: `cert-ocsp:${certName(host)}`, command: sh`[ -s ${cert} ] && openssl x509 -in ${cert} -noout -ocsp_uri 2>/dev/null; true`, parse: out => out.trim() };
}

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
    },
    template,
  );
}

/**
 * The remote side of a site change: mark the reload pending, keep the current file aside, put
 * the candidate in place (atomically) and link it, then `nginx -t`. If nginx rejects it, the
 * previous file and link are put back exactly, the pending mark is taken back unless an earlier
 * change left it, nginx's message goes to stderr, and the script fails. nginx itself is not
 * reloaded here: the live configuration only changes on the reload that follows a success.
 */
export function siteChangeScript(host: Host, opts: { write: boolean; foreign: boolean }): string {
  const site = sitePath(host);
  const link = siteLink(host);
  const previous = `/etc/nginx/sites-available/.${siteName(host)}.convex-ops-previous`;
  const pending = `${STATE_DIR}/pending/${NGINX_RELOAD}`;
  return [
    'set -e',
    sh`mkdir -p ${`${STATE_DIR}/pending`}`,
    sh`if [ -e ${pending} ]; then was_pending=yes; else was_pending=no; touch ${pending}; fi`,
    sh`rm -f ${previous}`,
    sh`if [ -f ${site} ]; then cp -p ${site} ${previous}; fi`,
    sh`old_link=$(readlink ${link} || true)`,
    opts.write ? atomicWriteScript({ path: site, mode: '644' }, opts.foreign) : ':',
    sh`ln -sfn ${site} ${link}`,
    sh`if out=$(nginx -t 2>&1); then rm -f ${previous}; exit 0; fi`,
    sh`if [ -f ${previous} ]; then mv -f ${previous} ${site}; else rm -f ${site}; fi`,
    sh`if [ -n "$old_link" ]; then ln -sfn "$old_link" ${link}; else rm -f ${link}; fi`,
    sh`if [ "$was_pending" = no ]; then rm -f ${pending}; fi`,
    `printf '%s\\n' "$out" >&2`,
    'exit 1',
  ].join('\n');
}

/** Brings the site file and its link to what the host wants, safely. Returns whether HTTPS is configured. */
export async function applySite(ctx: StepContext): Promise<boolean> {
  const { host } = ctx;
  const site = sitePath(host);
  const link = siteLink(host);
  await ctx.facts([nginxState, certificatePresent(host), ocspResponder(host), fileFact(site), pathKindFact(link)]);
  const state = await ctx.fact(nginxState);
  const certificate = await ctx.fact(certificatePresent(host));
  const ocsp = (await ctx.fact(ocspResponder(host))) !== '';
  const wanted = renderSite(host, { certificate, nginxVersion: state.version, ipv6: state.ipv6, ocsp });
  const current = await ctx.fact(fileFact(site));
  const linked = await ctx.fact(pathKindFact(link));
  if (current.kind === 'other') throw new Error(`${site} exists but is a ${current.type}, not a regular file. Move it away, then run again.`);
  if (linked !== 'absent' && !linked.startsWith('link:')) {
    throw new Error(`${link} is a ${linked}, not a link to ${site}. Move it away (it is another copy of this site), then run again; nothing was changed.`);
  }
  const write = current.kind !== 'file' || current.content !== wanted;
  const relink = linked !== `link:${site}`;
  if (current.kind === 'file' && !write && current.mode !== '644') {
    await ctx.change(`set ${site} to mode 644`, () => ctx.run(sh`chmod 644 ${site}`, `chmod ${site}`));
  }
  if (!write && !relink) return certificate;

  const foreign = current.kind === 'file' && !current.content.includes(MANAGED_MARKER);
  const stage = certificate ? 'HTTPS' : 'HTTP, ACME challenges only';
  const what = !write
    ? `enable ${site} (link from sites-enabled)`
    : current.kind === 'absent'
      ? `create ${site} (${stage})`
      : foreign
        ? `replace ${site} (${stage}; the original is kept aside)`
        : `update ${site} (${stage})`;
  const diff = write ? unifiedDiff(site, current.kind === 'file' ? current.content : '', wanted) : undefined;
  // The reload this change needs is marked pending by the script itself, before the file changes.
  await ctx.change(
    what,
    async () => {
      const result = await ctx.run(siteChangeScript(host, { write, foreign }), `write and test ${site}`, { stdin: write ? wanted : undefined, allowFail: true });
      if (result.code !== 0) {
        throw new Error(
          `nginx rejected the new configuration, so ${site} was put back as it was and nginx keeps serving the previous one. nginx -t said:\n${result.stderr.trim() || result.stdout.trim()}`,
        );
      }
    },
    diff,
  );
  return certificate;
}

/** Starts nginx when it is not running, else reloads it if a change asked for that. */
export async function ensureNginxServing(ctx: StepContext): Promise<void> {
  const state = await ctx.fact(nginxState);
  if (!state.running) {
    await ctx.change('start nginx', () => ctx.run(`${startNginxScript()} && rm -f ${STATE_DIR}/pending/${NGINX_RELOAD}`, 'start nginx'));
    return;
  }
  await ctx.runPending(NGINX_RELOAD, 'reload nginx', reloadNginxScript());
}

export const nginx: Step = {
  name: 'nginx',
  facts: host => [installedPackages, nginxState, certificatePresent(host), ocspResponder(host), fileFact(sitePath(host)), pathKindFact(siteLink(host)), pathKindFact(ACME_WEBROOT)],
  async run(ctx) {
    const { host } = ctx;
    if (!host.domains) ctx.skip(`hosts.${host.name} has no [domains]: there is nothing to put nginx in front of`);
    await ensurePackages(ctx, ['nginx']);
    if ((await ctx.fact(pathKindFact(ACME_WEBROOT))) === 'absent') {
      await ctx.change(`create the ACME webroot ${ACME_WEBROOT}`, () => ctx.run(sh`mkdir -p -m 755 ${ACME_WEBROOT}`, 'create webroot'));
    }
    const https = await applySite(ctx);
    await ensureNginxServing(ctx);
    return https
      ? `${sitePath(host)} serves ${domainList(host).join(', ')} over HTTPS`
      : `${sitePath(host)} answers ACME challenges for ${domainList(host).join(', ')} (no certificate yet: run scripts/letsencrypt.ts)`;
  },
};
