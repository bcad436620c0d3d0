// Rendering helpers of nginx, letsencrypt, firewall and the HTTPS checks, as data: no host.
// (Their plans: plan-nginx, plan-letsencrypt and plan-firewall.test.ts.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Host } from '../../scripts/lib/inventory.ts';
import { renderTemplate, templatePath, templateText } from '../../scripts/lib/templates.ts';
import { hasHttp2Directive, reloadNginxScript, renderSite } from '../../scripts/lib/steps/nginx.ts';
import { renewalValues } from '../../scripts/lib/steps/letsencrypt.ts';
import { iptablesUndo, openings, planUfw, renderIptablesScript, tunnelHint, ufwRule, ufwState } from '../../scripts/lib/steps/firewall.ts';
import { allSteps } from '../../scripts/lib/runbooks.ts';
import type { RunInfo } from '../../scripts/lib/cli.ts';
import { dashboardRestricted } from '../../checks/dashboard-restricted.ts';
import { cidrContains, cidrCovers } from '../../scripts/lib/facts/cidr.ts';
import { backendPortsLocal } from '../../checks/backend-ports.ts';
import { httpsChain } from '../../checks/https-chain.ts';
import { websocketUpgrade } from '../../checks/websocket.ts';
import { nginxConfig } from '../../checks/nginx-config.ts';

const host: Host = {
  name: 'dev', address: '203.0.113.7', port: 2222, user: 'root', known_hosts: '/k', volume: '/mnt/v', root: '/opt/convex',
  instance_name: 'swarm-dev', backend_image: 'r/convex-backend:1', dashboard_image: 'r/convex-dashboard:1', bind_address: '127.0.0.1',
  domains: { api: 'api.example.com', site: 'example.com', dashboard: 'dashboard.example.com' },
  dashboard_allow: ['198.51.100.0/24', '2001:db8::/32'], firewall: true,
  acme: { email: 'ops@example.com', directory: 'https://acme.example/dir', ca_bundle: '/local/ca.pem' },
  postgres: { mode: 'local', user: 'convex' }, backup: { keep: 3 },
};

test('templates: values, list lines repeated or removed, unknown placeholders refused', () => {
  assert.equal(renderTemplate('a {{x}} b\n  allow {{list}};\nend {{n}}', { x: 'X', list: ['1', '2'], n: 3 }), 'a X b\n  allow 1;\n  allow 2;\nend 3');
  assert.equal(renderTemplate('keep\n  http2 {{h}};\nkeep', { h: [] }), 'keep\nkeep');
  assert.equal(renderTemplate('$host {{v}}', { v: '$x $& $1' }), '$host $x $& $1', 'values are literal');
  assert.throws(() => renderTemplate('x {{nope}}', { x: '1' }, 'mine.conf'), /mine\.conf uses \{\{nope\}\}/);
});

test('CONVEX_OPS_FILES: an operator template takes precedence, others still come from files/', () => {
  const dir = mkdtempSync(join(tmpdir(), 'convex-ops-files-'));
  writeFileSync(join(dir, 'nginx-site.conf'), '# mine {{managed}}\n');
  const before = process.env.CONVEX_OPS_FILES;
  process.env.CONVEX_OPS_FILES = dir;
  try {
    assert.equal(templatePath('nginx-site.conf'), join(dir, 'nginx-site.conf'));
    assert.match(templatePath('nginx-site-http.conf'), /files\/nginx-site-http\.conf$/);
    assert.equal(renderSite(host, { certificate: true, ipv6: false, ocsp: false }), '# mine Managed by convex-ops\n');
  } finally {
    if (before === undefined) delete process.env.CONVEX_OPS_FILES;
    else process.env.CONVEX_OPS_FILES = before;
  }
});

test('the site before the certificate: port 80 for ACME challenges only', () => {
  const site = renderSite(host, { certificate: false, nginxVersion: '1.22.1', ipv6: true, ocsp: false });
  assert.match(site, /Managed by convex-ops/);
  assert.match(site, /listen 80;\n\s+listen \[::\]:80;/);
  assert.match(site, /server_name api\.example\.com example\.com dashboard\.example\.com;/);
  assert.match(site, /location \^~ \/\.well-known\/acme-challenge\/ \{\n\s+root \/var\/www\/convex-ops-acme;/);
  assert.doesNotMatch(site, /443|ssl_certificate|return 301/);
  assert.doesNotMatch(site, /\{\{/);
});

test('the site with the certificate: redirect, three HTTPS servers, websocket, dashboard allow list', () => {
  const site = renderSite(host, { certificate: true, nginxVersion: '1.22.1', ipv6: false, ocsp: false });
  assert.doesNotMatch(site, /\{\{|\[::\]/);
  assert.match(site, /return 301 https:\/\/\$host\$request_uri;/);
  assert.equal(site.match(/listen 443 ssl http2;/g)?.length, 3, 'http2 as a listen parameter before nginx 1.25.1');
  assert.doesNotMatch(site, /http2 on;/);
  assert.equal(site.match(/ssl_certificate \/etc\/letsencrypt\/live\/convex-swarm-dev\/fullchain\.pem;/g)?.length, 3);
  assert.match(site, /map \$http_upgrade \$connection_upgrade_swarm_dev \{/);
  assert.equal(site.match(/proxy_set_header Connection \$connection_upgrade_swarm_dev;/g)?.length, 3);
  assert.match(site, /server_name api\.example\.com;[\s\S]*location ~ \^\/api\/\(\[\^\/\]\+\/\)\?sync\$ \{\n\s+if \(-f \/var\/lib\/convex-ops\/maintenance\/swarm-dev\) \{\n\s+return 503;\n\s+\}\n\s+proxy_pass http:\/\/127\.0\.0\.1:3210;\n\s+proxy_read_timeout 3600s;/);
  assert.match(site, /server_name example\.com;[\s\S]*proxy_pass http:\/\/127\.0\.0\.1:3211;/);
  assert.match(site, /allow 127\.0\.0\.1;\n\s+allow ::1;\n\s+allow 198\.51\.100\.0\/24;\n\s+allow 2001:db8::\/32;\n\s+deny all;/);
  const dashboard = site.slice(site.indexOf('server_name dashboard.example.com;'));
  assert.match(dashboard, /deny all;[\s\S]*proxy_pass http:\/\/127\.0\.0\.1:6791;/);
  assert.match(site, /X-Forwarded-Proto \$scheme/);

  const newer = renderSite(host, { certificate: true, nginxVersion: '1.26.0', ipv6: true, ocsp: false });
  assert.equal(newer.match(/listen 443 ssl;\n\s+listen \[::\]:443 ssl;\n\s+http2 on;/g)?.length, 3);
  assert.ok(hasHttp2Directive('1.25.1') && !hasHttp2Directive('1.25.0') && !hasHttp2Directive(undefined));
});

test('maintenance: the api and site servers answer 503 with Retry-After and JSON while the flag exists; the dashboard is left alone', () => {
  const site = renderSite(host, { certificate: true, nginxVersion: '1.22.1', ipv6: false, ocsp: false });
  const servers = site.split(/\n(?=server \{)/);
  const named = (name: string) => servers.find(s => s.includes(`server_name ${name};`))!;
  for (const name of ['api.example.com', 'example.com']) {
    const server = named(name);
    // Every proxied location checks the flag first; the 503 goes to the JSON answer.
    assert.equal(server.match(/proxy_pass /g)?.length, server.match(/if \(-f \/var\/lib\/convex-ops\/maintenance\/swarm-dev\) \{\n\s+return 503;/g)?.length, name);
    assert.match(server, /error_page 503 @maintenance;/);
    const answer = server.slice(server.indexOf('location @maintenance {'));
    assert.match(answer, /default_type application\/json;/);
    assert.match(answer, /add_header Retry-After 5 always;/);
    assert.match(answer, /add_header Strict-Transport-Security "max-age=63072000" always;/);
    const body = /return 503 '(.*)\\n';/.exec(answer)?.[1];
    assert.deepEqual(Object.keys(JSON.parse(body ?? 'null')), ['code', 'message']);
  }
  assert.doesNotMatch(named('dashboard.example.com'), /maintenance/);
});

test("the site's TLS: Mozilla intermediate in every HTTPS server, HSTS always, stapling only with an OCSP responder", () => {
  const site = renderSite(host, { certificate: true, nginxVersion: '1.22.1', ipv6: false, ocsp: false });
  const servers = site.split(/\nserver \{/).slice(1).filter(server => /listen 443/.test(server));
  assert.equal(servers.length, 3);
  for (const server of servers) {
    assert.match(server, /\n\s+ssl_protocols TLSv1\.2 TLSv1\.3;\n/);
    assert.match(server, /\n\s+ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305;\n/);
    assert.match(server, /\n\s+ssl_prefer_server_ciphers off;\n/);
    assert.match(server, /\n\s+ssl_session_timeout 1d;\n/);
    assert.match(server, /\n\s+ssl_session_tickets off;\n/);
    assert.match(server, /\n\s+add_header Strict-Transport-Security "max-age=63072000" always;\n/);
  }
  assert.doesNotMatch(site, /ssl_stapling|ssl_trusted_certificate/, 'no responder, no stapling (nginx would warn at every start)');
  const port80 = site.slice(site.indexOf('listen 80'), site.indexOf('listen 443'));
  assert.doesNotMatch(port80, /Strict-Transport-Security/, 'HSTS means nothing over plain HTTP');

  const stapled = renderSite(host, { certificate: true, nginxVersion: '1.22.1', ipv6: false, ocsp: true });
  assert.equal(stapled.match(/ssl_stapling on;\n\s+ssl_stapling_verify on;\n\s+ssl_trusted_certificate \/etc\/letsencrypt\/live\/convex-swarm-dev\/chain\.pem;/g)?.length, 3);
  assert.equal(renderSite(host, { certificate: false, nginxVersion: '1.22.1', ipv6: false, ocsp: true }), renderSite(host, { certificate: false, nginxVersion: '1.22.1', ipv6: false, ocsp: false }), 'the ACME-only site has no TLS at all');
});

test('firewall: SSH first, then 80 and 443, PostgreSQL from the Docker networks; existing rules kept', () => {
  const wanted = openings(host, ['172.17.0.0/16', '172.18.0.0/16']);
  assert.deepEqual(wanted.map(ufwRule), ['allow 2222/tcp', 'allow 80/tcp', 'allow 443/tcp', 'allow from 172.17.0.0/16 to any port 5432 proto tcp', 'allow from 172.18.0.0/16 to any port 5432 proto tcp']);
  const fresh = planUfw(wanted, { installed: true, active: false, defaultInput: 'DROP', rules: [] });
  assert.match(fresh[0]!, /^ufw allow 2222\/tcp comment/);
  assert.equal(fresh.at(-1), 'ufw --force enable');
  const parsed = ufwState.parse(
    "installed\nStatus: active\ninput ACCEPT\nAdded user rules (see 'ufw status' for running firewall):\nufw allow 2222/tcp comment 'convex-ops: SSH'\nufw allow 8080/tcp\nufw allow 80/tcp\n",
    0,
  );
  assert.deepEqual(parsed.rules, ['allow 2222/tcp', 'allow 8080/tcp', 'allow 80/tcp']);
  const plan = planUfw(wanted, parsed);
  assert.deepEqual(plan.map(c => c.replace(/ comment .*/, '')), ['ufw allow 443/tcp', 'ufw allow from 172.17.0.0/16 to any port 5432 proto tcp', 'ufw allow from 172.18.0.0/16 to any port 5432 proto tcp', 'ufw default deny incoming']);
  assert.deepEqual(planUfw(wanted, { installed: true, active: true, defaultInput: 'DROP', rules: wanted.map(ufwRule) }), []);
  const external = openings({ ...host, postgres: { mode: 'external', user: 'convex' } }, ['172.17.0.0/16']);
  assert.equal(external.length, 3);
});

test('firewall without domains: SSH only (and PostgreSQL from Docker), the backend through an SSH tunnel', () => {
  const bare: Host = { ...host, domains: undefined };
  assert.deepEqual(openings(bare, ['172.18.0.0/16']).map(ufwRule), ['allow 2222/tcp', 'allow from 172.18.0.0/16 to any port 5432 proto tcp']);
  assert.match(tunnelHint(bare), /do not answer from outside.*ssh -N -L 3210:127\.0\.0\.1:3210 -L 3211:127\.0\.0\.1:3211 -L 6791:127\.0\.0\.1:6791 root@203\.0\.113\.7 -p 2222$/);
  const run: RunInfo = { args: {} as RunInfo['args'], local: (...parts) => parts.join('/') };
  const names = (h: Host) => allSteps(h, run).map(step => step.name);
  assert.equal(names(bare).at(-1), 'firewall', 'all.ts runs the firewall for a host without domains');
  assert.deepEqual(names(host).slice(-3), ['nginx', 'letsencrypt', 'firewall']);
  assert.ok(!names({ ...bare, firewall: false }).includes('firewall'));
});

test('firewall without ufw: one iptables chain, SSH accepted before the final DROP', () => {
  const script = renderIptablesScript(host, openings(host, ['172.18.0.0/16']), '/etc/cron.d/convex-ops-firewall');
  const v4 = script.slice(0, script.indexOf('ip6tables-restore'));
  assert.ok(v4.indexOf('--dport 2222 -j ACCEPT') < v4.indexOf('-j DROP'));
  assert.match(v4, /-A convex-ops-input -s 172\.18\.0\.0\/16 -p tcp --dport 5432 -j ACCEPT/);
  assert.doesNotMatch(script.slice(script.indexOf('ip6tables-restore')), /5432/);
  assert.doesNotMatch(script, /\{\{/);
});

test('iptables undo: the INPUT jumps and the boot hook go, so a failed probe cannot lock anyone out at the next boot', () => {
  const cron = iptablesUndo('other');
  assert.match(cron, /iptables -D INPUT -j convex-ops-input/);
  assert.match(cron, /ip6tables -D INPUT -j convex-ops-input/);
  assert.match(cron, /rm -f \/etc\/cron\.d\/convex-ops-firewall/);
  assert.match(cron, /rm -f \/var\/lib\/convex-ops\/firewall-applied/, 'the next run applies and proves it again');
  const systemd = iptablesUndo('systemd');
  assert.match(systemd, /systemctl disable convex-ops-firewall\.service; rm -f \/etc\/systemd\/system\/convex-ops-firewall\.service/);
  assert.doesNotMatch(systemd, /cron/);
});

test('addresses and CIDRs, v4 and v6', () => {
  assert.ok(cidrContains('198.51.100.0/24', '198.51.100.77'));
  assert.ok(!cidrContains('198.51.100.0/24', '198.51.101.1'));
  assert.ok(cidrContains('203.0.113.7', '203.0.113.7') && !cidrContains('203.0.113.7', '203.0.113.8'));
  assert.ok(cidrContains('0.0.0.0/0', '8.8.8.8'));
  assert.ok(cidrContains('2001:db8::/32', '2001:db8:1::5') && !cidrContains('2001:db8::/32', '2001:db9::5'));
  assert.ok(cidrContains('::1', '::1') && !cidrContains('::1/128', '127.0.0.1'));
  assert.ok(!cidrContains('999.1.1.1/8', '999.1.1.1'), 'not an address');
  assert.ok(cidrCovers('172.16.0.0/12', '172.18.0.0/16') && cidrCovers('172.18.0.0/16', '172.18.0.0/16'));
  assert.ok(!cidrCovers('172.18.0.0/16', '172.16.0.0/12'), 'a wider range is not inside a narrower one');
});

test('check verdicts', () => {
  const dashboard = (out: string) => dashboardRestricted.verdict(out, 0, host);
  assert.equal(dashboard('203.0.113.7 403\n172.17.0.1 403\n198.51.100.9 200\n'), undefined, 'allowed addresses may get in');
  assert.match(dashboard('203.0.113.7 200\n')!, /203\.0\.113\.7 got 200/);
  assert.equal(dashboard(''), undefined);

  assert.equal(backendPortsLocal.verdict('listen 127.0.0.1:3210\nlisten 127.0.0.1:6791\nlisten 0.0.0.0:22\nlisten [::]:443\nnat -A DOCKER -d 127.0.0.1/32 ! -i br-1 -p tcp -m tcp --dport 3210 -j DNAT --to-destination 172.18.0.2:3210\n', 0, host), undefined);
  assert.match(backendPortsLocal.verdict('listen 0.0.0.0:3210\n', 0, host)!, /listening on 0\.0\.0\.0:3210/);
  assert.match(backendPortsLocal.verdict('listen [::]:6791\n', 0, host)!, /\[::\]:6791/);
  assert.match(backendPortsLocal.verdict('nat -A DOCKER ! -i br-1 -p tcp -m tcp --dport 3211 -j DNAT --to-destination 172.18.0.2:3211\n', 0, host)!, /Docker forwards/);

  assert.equal(httpsChain.verdict('api.example.com 0 200\nexample.com 0 404\ndashboard.example.com 0 200\n', 0, host), undefined);
  assert.match(httpsChain.verdict('api.example.com 60 curl: (60) SSL certificate problem: unable to get local issuer certificate 000\nexample.com 0 502\ndashboard.example.com 0 200\n', 0, host)!, /api\.example\.com: curl: \(60\) SSL certificate problem: unable to get local issuer certificate; example\.com: nginx answered 502/);

  assert.equal(websocketUpgrade.verdict('curl: (28) Operation timed out after 3001 milliseconds with 0 bytes received\n101', 28, host), undefined);
  assert.match(websocketUpgrade.verdict('400', 0, host)!, /got 400, not 101/);

  assert.equal(nginxConfig.verdict('nginx: the configuration file /etc/nginx/nginx.conf syntax is ok\n', 0, host), undefined);
  assert.match(nginxConfig.verdict('nginx: [warn] conflicting server name "api.example.com" on 0.0.0.0:443, ignored\n', 0, host)!, /claims this host's names/);
});

test('the certbot deploy hook carries the whole reload script, line by line, and is valid sh', () => {
  const hook = renderTemplate(templateText('certbot-deploy-hook.sh'), renewalValues(host), 'certbot-deploy-hook.sh');
  assert.ok(hook.includes(reloadNginxScript()), 'the reload script is in the hook as it is');
  assert.equal(spawnSync('sh', ['-n'], { input: hook }).status, 0, 'sh -n rejects the hook');
});
