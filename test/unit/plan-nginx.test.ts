// The nginx step's plan: facts in, changes out; and the site change's nginx -t guard, run in a
// scratch folder with a stand-in nginx.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readlinkSync, existsSync, writeFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { changeScript } from '../../scripts/lib/plan.ts';
import type { Change } from '../../scripts/lib/plan.ts';
import { SkipStep } from '../../scripts/lib/step.ts';
import type { CertificateState } from '../../scripts/lib/facts/certificate.ts';
import { NGINX_RELOAD, planNginxInstall, planSite, renderSite, sitePath } from '../../scripts/lib/steps/nginx.ts';
import type { SiteFacts } from '../../scripts/lib/steps/nginx.ts';
import { MANAGED_MARKER } from '../../scripts/lib/files.ts';
import { absent, file, httpsHost, packages, testHost } from './fixtures.ts';

const labels = (changes: Change[]) => changes.map(c => c.label);
const SITE = '/etc/nginx/sites-available/convex-swarm-dev.conf';
const LINK = '/etc/nginx/sites-enabled/convex-swarm-dev.conf';

const noCertificate: CertificateState = { present: false, usable: false, names: [], verified: false, ocsp: '' };
const certificate: CertificateState = { ...noCertificate, present: true, usable: true };
const running = { version: '1.22.1', running: true, ipv6: false };

const httpSite = renderSite(httpsHost, { certificate: false, nginxVersion: '1.22.1', ipv6: false, ocsp: false });
const httpsSite = renderSite(httpsHost, { certificate: true, nginxVersion: '1.22.1', ipv6: false, ocsp: false });
const converged: SiteFacts = { nginx: running, certificate: noCertificate, site: file(httpSite), link: `link:${SITE}`, pending: [] };

test('nginx install: the package and the ACME webroot, then nothing; a host without domains is skipped', () => {
  assert.deepEqual(labels(planNginxInstall({ packages: packages(), webroot: 'absent' }, httpsHost)), ['install nginx', 'create the ACME webroot /var/www/convex-ops-acme']);
  assert.deepEqual(planNginxInstall({ packages: packages('nginx'), webroot: 'dir' }, httpsHost), []);
  assert.throws(() => planNginxInstall({ packages: packages(), webroot: 'absent' }, testHost), (e: Error) => e instanceof SkipStep && /has no \[domains\]/.test(e.message));
});

test('site on a fresh host: the ACME-only site, then nginx started (its start clears the reload the site armed)', () => {
  const changes = planSite({ nginx: { running: false, ipv6: false }, certificate: noCertificate, site: absent, link: 'absent', pending: [] }, httpsHost);
  assert.deepEqual(labels(changes), [`create ${SITE} (HTTP, ACME challenges only)`, 'start nginx']);
  assert.equal(changes[0]!.arms, NGINX_RELOAD);
  assert.equal(changes[0]!.stdin, httpSite);
  assert.equal(changes[1]!.clears, NGINX_RELOAD);
});

test('site converged: nothing; a reload an earlier run left pending is still done', () => {
  assert.deepEqual(planSite(converged, httpsHost), []);
  assert.deepEqual(labels(planSite({ ...converged, pending: [NGINX_RELOAD] }, httpsHost)), ['reload nginx']);
});

test('site changed: the certificate arrived (HTTPS), the link is missing, the mode drifted', () => {
  assert.deepEqual(labels(planSite({ ...converged, certificate }, httpsHost)), [`update ${SITE} (HTTPS)`, 'reload nginx']);
  assert.deepEqual(labels(planSite({ ...converged, link: 'absent' }, httpsHost)), [`enable ${SITE} (link from sites-enabled)`, 'reload nginx']);
  assert.deepEqual(labels(planSite({ ...converged, link: 'link:/etc/nginx/sites-available/old.conf' }, httpsHost)), [`enable ${SITE} (link from sites-enabled)`, 'reload nginx']);
  assert.deepEqual(labels(planSite({ ...converged, site: file(httpSite, '600') }, httpsHost)), [`set ${SITE} (HTTP, ACME challenges only) to mode 644 root:root`]);
  assert.deepEqual(labels(planSite({ ...converged, site: file('server {}\n') }, httpsHost)), [`replace ${SITE} (HTTP, ACME challenges only) (the original is kept aside)`, 'reload nginx']);
  const ocsp = planSite({ ...converged, certificate: { ...certificate, ocsp: 'http://ocsp.example.test' }, site: file(httpsSite) }, httpsHost);
  assert.deepEqual(labels(ocsp), [`update ${SITE} (HTTPS)`, 'reload nginx'], 'a responder in the certificate turns stapling on');
});

test('site refused: a sites-enabled entry that is a copy, not a link', () => {
  assert.throws(() => planSite({ ...converged, link: 'file' }, httpsHost), /sites-enabled\/convex-swarm-dev\.conf is a file, not a link to .*nothing was changed/);
});

/** Runs a planned change as the session would, on a scratch copy of the paths it touches, with `nginx -t` answering `exit`. */
function runInScratch(change: Change, nginxExit: number, setup: (root: string) => void = () => {}) {
  const root = mkdtempSync(join(tmpdir(), 'plan-nginx-'));
  for (const dir of ['etc/nginx/sites-available', 'etc/nginx/sites-enabled', 'state', 'bin']) mkdirSync(join(root, dir), { recursive: true });
  writeFileSync(join(root, 'bin/nginx'), `#!/bin/sh\necho 'nginx: [emerg] unknown directive "proxy_bogus_directive" in ${LINK}:12' >&2\nexit ${nginxExit}\n`, { mode: 0o755 });
  setup(root);
  const script = changeScript(change)!.replaceAll('/etc/nginx', `${root}/etc/nginx`).replaceAll('/var/lib/convex-ops', `${root}/state`);
  const result = spawnSync('sh', ['-c', script], { input: change.stdin, encoding: 'utf8', env: { ...process.env, PATH: `${root}/bin:${process.env.PATH}` } });
  return { root, result, at: (path: string) => join(root, path.replace(/^\/etc\//, 'etc/')) };
}

test('nginx -t accepts: the new file is in place and linked, the reload stays pending', () => {
  const [write] = planSite({ ...converged, certificate, site: file(httpSite), link: 'absent' }, httpsHost);
  const { root, result, at } = runInScratch(write!, 0, r => writeFileSync(join(r, 'etc/nginx/sites-available/convex-swarm-dev.conf'), httpSite));
  assert.equal(result.status, 0, result.stderr);
  assert.equal(readFileSync(at(SITE), 'utf8'), httpsSite);
  assert.equal(readlinkSync(at(LINK)), at(SITE));
  assert.ok(existsSync(join(root, 'state/pending', NGINX_RELOAD)));
  assert.deepEqual(readdirSync(at('/etc/nginx/sites-available')), ['convex-swarm-dev.conf'], 'no previous or temporary file is left');
});

test('nginx -t refuses: the previous file and link are back, the reload is not left pending, nginx\'s message ends the error', () => {
  const [write] = planSite({ ...converged, certificate, site: file(httpSite) }, httpsHost);
  const { root, result, at } = runInScratch(write!, 1, r => {
    writeFileSync(join(r, 'etc/nginx/sites-available/convex-swarm-dev.conf'), httpSite);
  });
  assert.equal(result.status, 1);
  assert.match(result.stderr, /^nginx rejected the new configuration, so \S*\/etc\/nginx\/sites-available\/convex-swarm-dev\.conf was put back as it was.*nginx -t said:\nnginx: \[emerg\] unknown directive "proxy_bogus_directive"/s);
  assert.equal(readFileSync(at(SITE), 'utf8'), httpSite);
  assert.ok(!existsSync(at(LINK)), 'the link that was not there is not there');
  assert.ok(!existsSync(join(root, 'state/pending', NGINX_RELOAD)));
  assert.deepEqual(readdirSync(at('/etc/nginx/sites-available')), ['convex-swarm-dev.conf']);

  // A reload an earlier run left pending survives the refusal.
  const [again] = planSite({ ...converged, certificate, site: file(httpSite), pending: [NGINX_RELOAD] }, httpsHost);
  const second = runInScratch(again!, 1, r => {
    writeFileSync(join(r, 'etc/nginx/sites-available/convex-swarm-dev.conf'), httpSite);
    mkdirSync(join(r, 'state/pending'));
    writeFileSync(join(r, 'state/pending', NGINX_RELOAD), '');
  });
  assert.equal(second.result.status, 1);
  assert.ok(existsSync(join(second.root, 'state/pending', NGINX_RELOAD)));
});

test('the site file carries the managed marker, so a later run updates rather than replaces it', () => {
  assert.ok(httpSite.includes(MANAGED_MARKER));
  assert.equal(sitePath(httpsHost), SITE);
});
