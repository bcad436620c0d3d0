// The letsencrypt step's plan: certbot and the renewal files, then an order only when the
// certificate needs one and every domain points at the droplet (the same refusal in a dry run
// as in a real run: DNS and the certificate are facts read up front).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Host } from '../../scripts/lib/inventory.ts';
import type { Change } from '../../scripts/lib/plan.ts';
import { SkipStep } from '../../scripts/lib/step.ts';
import type { CertificateState } from '../../scripts/lib/facts/certificate.ts';
import { certificateFact } from '../../scripts/lib/facts/certificate.ts';
import type { DnsState } from '../../scripts/lib/facts/dns.ts';
import { NGINX_RELOAD } from '../../scripts/lib/steps/nginx.ts';
import { dnsProblem, planCertbotInstall, planCertificate, planOrder, planRenewal } from '../../scripts/lib/steps/letsencrypt.ts';
import type { RenewalFacts } from '../../scripts/lib/steps/letsencrypt.ts';
import { SYSTEMD_RELOAD } from '../../scripts/lib/system.ts';
import { absent, file, httpsHost, packages, testHost } from './fixtures.ts';

const labels = (changes: Change[]) => changes.map(c => c.label);
const DAY = 86400;
const NAMES = ['api.example.test', 'site.example.test', 'dash.example.test'];

const good: CertificateState = {
  present: true, usable: true, now: 1_000_000_000, notAfter: 1_000_000_000 + 60 * DAY, verified: true, server: 'https://acme.example.test/dir', names: NAMES, ocsp: '',
};
const none: CertificateState = { present: false, usable: false, names: [], verified: false, ocsp: '' };
const SELF = ['203.0.113.7', '10.10.0.5'];
const pointed: DnsState = { names: new Map(NAMES.map(n => [n, ['203.0.113.7']])), self: SELF };

const bundleDir = mkdtempSync(join(tmpdir(), 'plan-letsencrypt-'));
writeFileSync(join(bundleDir, 'ca.pem'), '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n');
const privateAcme: Host = { ...httpsHost, acme: { ...httpsHost.acme, ca_bundle: join(bundleDir, 'ca.pem') } };

const fresh: RenewalFacts = { init: 'systemd', renewal: { cronRunning: false, timerActive: false }, bundle: absent, hook: absent, cron: absent, dropin: absent, pending: [] };

test('certbot: with openssl, and cron without systemd; nothing once installed; a host without domains is skipped', () => {
  assert.deepEqual(labels(planCertbotInstall({ packages: packages(), init: 'systemd' }, httpsHost)), ['install certbot, openssl']);
  assert.deepEqual(labels(planCertbotInstall({ packages: packages('openssl'), init: 'other' }, httpsHost)), ['install certbot, cron']);
  assert.deepEqual(planCertbotInstall({ packages: packages('certbot', 'openssl'), init: 'systemd' }, httpsHost), []);
  assert.throws(() => planCertbotInstall({ packages: packages(), init: 'systemd' }, testHost), (e: Error) => e instanceof SkipStep && /nothing to certify/.test(e.message));
});

test('renewal, fresh: the CA bundle, the deploy hook, the drop-in with its daemon-reload, the timer; without systemd the cron entry and cron', () => {
  const systemd = planRenewal(fresh, privateAcme);
  assert.deepEqual(labels(systemd), ['create the ACME CA bundle', 'create the certbot deploy hook', 'create certbot.service drop-in (CA bundle)', 'reload systemd units', 'enable certbot.timer']);
  assert.equal(systemd[2]!.arms, SYSTEMD_RELOAD);
  assert.equal(systemd[3]!.clears, SYSTEMD_RELOAD);
  assert.deepEqual(labels(planRenewal({ ...fresh, init: 'other' }, privateAcme)), ['create the ACME CA bundle', 'create the certbot deploy hook', 'create /etc/cron.d/convex-ops-certbot', 'start cron (certbot renews from it)']);
  assert.deepEqual(labels(planRenewal({ ...fresh, init: 'other' }, httpsHost)), ['create the certbot deploy hook', 'start cron (certbot renews from it)'], 'a public ACME server needs no bundle');
});

test('renewal, converged: nothing; a changed drop-in is reloaded', () => {
  const [bundle, hook, dropin] = planRenewal(fresh, privateAcme).map(c => c.stdin);
  const converged: RenewalFacts = { ...fresh, renewal: { cronRunning: false, timerActive: true }, bundle: file(bundle!), hook: file(hook!, '755'), dropin: file(dropin!) };
  assert.deepEqual(planRenewal(converged, privateAcme), []);
  assert.deepEqual(labels(planRenewal({ ...converged, dropin: file('# Managed by convex-ops\n[Service]\n') }, privateAcme)), ['update certbot.service drop-in (CA bundle)', 'reload systemd units']);
  assert.deepEqual(labels(planRenewal({ ...converged, pending: [SYSTEMD_RELOAD] }, privateAcme)), ['reload systemd units'], 'a reload an earlier run left pending');
});

test('certificates: ordered when missing, short, from another server, unverifiable, or missing a name', () => {
  assert.deepEqual(planCertificate(httpsHost, none), { order: true, why: 'no certificate convex-swarm-dev yet', flags: [] });
  const kept = planCertificate(httpsHost, good);
  assert.equal(kept.order, false);
  assert.match((kept as { reason: string }).reason, /covers api\.example\.test, site\.example\.test, dash\.example\.test until .* \(60 days\)/);
  assert.equal(planCertificate(httpsHost, { ...good, names: [...NAMES, 'old.example.test'] }).order, false, 'a name too many is no reason to order');
  assert.deepEqual(planCertificate(httpsHost, { ...good, names: NAMES.slice(0, 2) }), { order: true, why: 'add dash.example.test to the certificate', flags: ['--expand'] });
  assert.deepEqual(planCertificate(httpsHost, { ...good, notAfter: good.now! + 30 * DAY }), { order: true, why: 'the certificate has 30 days left', flags: ['--force-renewal'] });
  assert.equal(planCertificate(httpsHost, { ...good, notAfter: good.now! + 31 * DAY }).order, false);
  assert.match((planCertificate(httpsHost, { ...good, server: 'https://acme-staging-v02.api.letsencrypt.org/directory' }) as { why: string }).why, /comes from https:\/\/acme-staging/);
  assert.match((planCertificate(privateAcme, { ...good, verified: false }) as { why: string }).why, /does not verify against \/etc\/convex-ops\/acme-ca\.pem/);
});

test('order: none for a good certificate; one for a missing, short or narrower one, arming the nginx reload', () => {
  assert.deepEqual(planOrder({ certificate: good, dns: pointed }, httpsHost), []);
  const [order, ...rest] = planOrder({ certificate: none, dns: pointed }, httpsHost);
  assert.deepEqual(rest, []);
  assert.equal(order!.label, 'order a certificate for api.example.test, site.example.test, dash.example.test from https://acme.example.test/dir (no certificate convex-swarm-dev yet)');
  assert.equal(order!.arms, NGINX_RELOAD);
  assert.ok(order!.streams);
  assert.match(order!.script!, /^\[ -f \/etc\/nginx\/sites-available\/convex-swarm-dev\.conf \] \|\| \{ echo .*is missing, so nothing answers the ACME challenges/);
  assert.match(order!.script!, /certbot certonly .* --cert-name convex-swarm-dev -d api\.example\.test -d site\.example\.test -d dash\.example\.test +>&2/);

  const renewal = planOrder({ certificate: { ...good, notAfter: good.now! + 10 * DAY }, dns: pointed }, httpsHost);
  assert.deepEqual(labels(renewal), ['order a certificate for api.example.test, site.example.test, dash.example.test from https://acme.example.test/dir (the certificate has 10 days left)']);
  assert.match(renewal[0]!.script!, /--force-renewal >&2/);
  const expansion = planOrder({ certificate: { ...good, names: NAMES.slice(0, 2) }, dns: pointed }, httpsHost);
  assert.deepEqual(labels(expansion), ['order a certificate for api.example.test, site.example.test, dash.example.test from https://acme.example.test/dir (add dash.example.test to the certificate)']);
  assert.match(expansion[0]!.script!, /--expand >&2/);
  assert.match(planOrder({ certificate: none, dns: pointed }, privateAcme)[0]!.script!, /REQUESTS_CA_BUNDLE=\/etc\/convex-ops\/acme-ca\.pem certbot/);
});

test('order refused while a domain does not point at the droplet: the message names each; a good certificate needs no DNS', () => {
  const astray: DnsState = { names: new Map([['api.example.test', ['203.0.113.7']], ['site.example.test', ['192.0.2.1']], ['dash.example.test', []]]), self: SELF };
  assert.throws(() => planOrder({ certificate: none, dns: astray }, httpsHost), (e: Error) => {
    assert.match(e.message, /^no certificate was requested: site\.example\.test resolves to 192\.0\.2\.1, which is not this droplet; dash\.example\.test does not resolve \(the droplet's addresses: 203\.0\.113\.7, 10\.10\.0\.5\)/);
    assert.doesNotMatch(e.message, /api\.example\.test/);
    return true;
  });
  assert.deepEqual(planOrder({ certificate: good, dns: astray }, httpsHost), []);
  const aaaa: DnsState = { names: new Map(NAMES.map(n => [n, n === 'api.example.test' ? ['203.0.113.7', '2001:db8::9'] : ['203.0.113.7']])), self: SELF };
  assert.match(dnsProblem(httpsHost, aaaa)!, /api\.example\.test resolves to 2001:db8::9/, 'an AAAA elsewhere fails validation too');
});

test('after certbot: the certificate read in the same command must now be right, else the step fails', () => {
  const [order] = planOrder({ certificate: none, dns: pointed }, httpsHost);
  const fact = certificateFact(httpsHost);
  const now = Math.floor(Date.now() / 1000);
  const issued = ['usable', 'present', `end ${now + 90 * DAY}`, `now ${now}`, ...NAMES.map(n => `name ${n}`), 'verified', 'server https://acme.example.test/dir'].join('\n');
  assert.deepEqual(fact.parse(issued, 0).names, NAMES);
  assert.doesNotThrow(() => order!.after!(issued, undefined as never));
  assert.throws(() => order!.after!(issued.replace('name dash.example.test\n', ''), undefined as never), /certbot finished, but the certificate is still not right: add dash\.example\.test to the certificate/);
});
