// HTTPS in front of the backend (issue 4), on one fresh fleet droplet with pebble as the ACME
// server: one all.ts run, as a user runs it, installs and certifies it; then everything is
// verified from the test host (TLS against pebble's CA, a websocket round trip, the origins), a
// second run changes nothing and orders nothing, a broken template never reaches the live
// configuration, an unrelated site survives untouched, the firewall keeps SSH and HTTPS open
// and the rest closed, and a renewal run from the cron job's environment reloads nginx.
//
// fleet.exec() is used for assertions and for preconditions only (the unrelated site, a reload
// left pending by a run that died, a NAT in front of sshd, and the cron daemon's firing of a
// renewal); every change of the product's is made by its scripts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { useFleet } from '../fleet/index.ts';
import type { Fleet } from '../fleet/index.ts';
import { portOpen } from '../fleet/droplets.ts';
import { docker } from '../fleet/proc.ts';
import { sshBehindNat } from './ssh-nat.ts';

const FLEET_NAME = 'httpstest';
const DROPLET = 'web';
const DOMAINS = { api: `api.${DROPLET}.test`, site: `${DROPLET}.test`, dashboard: `dashboard.${DROPLET}.test` };
const SITE_FILE = '/etc/nginx/sites-available/convex-convex-self-hosted.conf';
const OTHER_SITE = '/etc/nginx/sites-available/other.conf';
const OTHER_LINK = '/etc/nginx/sites-enabled/other.conf';
const OTHER_MARKER = 'unrelated site, hands off';
const REPO_FILES = path.resolve(import.meta.dirname, '../../files');
const PENDING_DIR = '/var/lib/convex-ops/pending';

const fleet: Fleet = await useFleet({ name: FLEET_NAME, droplets: [{ name: DROPLET, user: 'deploy', domains: true }] });
const ip = fleet.droplets[DROPLET]!.ip;
const ca = await fs.readFile(fleet.acmeCaPath!, 'utf8');

// --------------------------------------------------------------------------- helpers

interface JsonRun { code: number; recap: { ok: number; changed: number; failed: number; skipped: number }; steps: Array<{ step: string; status: string; detail: string; changes: string[] }>; output: string }

async function run(script: string, args: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<JsonRun> {
  const result = await fleet.runScript(script, ['--host', DROPLET, '--json', ...args], env);
  const output = `${result.stdout}\n${result.stderr}`;
  let document: { hosts: Array<{ steps: JsonRun['steps']; recap: JsonRun['recap'] }> };
  try {
    document = JSON.parse(result.stdout);
  } catch {
    throw new Error(`${script} printed no JSON (exit ${result.code}):\n${output}`);
  }
  const [hostRun] = document.hosts;
  return { code: result.code, recap: hostRun!.recap, steps: hostRun!.steps, output };
}

function describe(r: JsonRun): string {
  return r.steps.map(s => `${s.step} ${s.status} ${s.detail}`).join('\n');
}

async function sh(command: string): Promise<string> {
  return (await fleet.exec(DROPLET, command)).stdout;
}

async function sha256Of(file: string): Promise<string> {
  return (await sh(`sha256sum ${file} | cut -d' ' -f1`)).trim();
}

/** An HTTPS request to the droplet's address for `servername`, verified against pebble's CA only. */
function httpsGet(servername: string, urlPath: string): Promise<{ status: number; body: string; headers: http.IncomingHttpHeaders; serial: string }> {
  return new Promise((resolve, reject) => {
    const request = https.get(
      { host: ip, port: 443, path: urlPath, servername, ca, headers: { host: servername }, timeout: 10_000, agent: false },
      response => {
        const serial = (response.socket as tls.TLSSocket).getPeerCertificate().serialNumber;
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('end', () => resolve({ status: response.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8'), headers: response.headers, serial }));
        response.on('error', reject);
      },
    );
    request.on('timeout', () => request.destroy(new Error(`timeout: https://${servername}${urlPath}`)));
    request.on('error', reject);
  });
}

function httpGet(hostHeader: string, urlPath: string, port = 80): Promise<{ status: number; body: string; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const request = http.get({ host: ip, port, path: urlPath, headers: { host: hostHeader }, timeout: 5000, agent: false }, response => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8'), headers: response.headers }));
    });
    request.on('timeout', () => request.destroy(new Error(`timeout: http://${hostHeader}:${port}${urlPath}`)));
    request.on('error', reject);
  });
}

/**
 * A TLS handshake with the droplet for `servername`: the protocol and whether the server sent a
 * session ticket, or the error's code when the handshake fails. Old protocols and ciphers need
 * OpenSSL's security level 0 on this side, so that a refusal can only come from nginx.
 */
function tlsHandshake(servername: string, opts: tls.ConnectionOptions): Promise<{ protocol: string | null; ticket: boolean } | { error: string }> {
  return new Promise(resolve => {
    const socket = tls.connect({ host: ip, port: 443, servername, ca, ciphers: 'DEFAULT:@SECLEVEL=0', timeout: 10_000, ...opts }, () => {
      resolve({ protocol: socket.getProtocol(), ticket: socket.getTLSTicket() !== undefined });
      socket.destroy();
    });
    socket.on('error', (error: NodeJS.ErrnoException) => resolve({ error: error.code ?? error.message }));
    socket.on('timeout', () => socket.destroy(new Error(`TLS timeout: ${servername}`)));
  });
}

/** Whether a TCP connection to the droplet's port is accepted within 3 s. */
const tcpOpen = (port: number) => portOpen(ip, port, 3000);

/**
 * RFC 6455 by hand over TLS: the upgrade handshake (checking Sec-WebSocket-Accept), one masked
 * text frame out, the echoed frame back, then a close. Returns the echoed text.
 */
async function websocketEcho(servername: string, urlPath: string, text: string): Promise<string> {
  const socket = tls.connect({ host: ip, port: 443, servername, ca, ALPNProtocols: ['http/1.1'] });
  let buffer = Buffer.alloc(0);
  let wake: (() => void) | undefined;
  let failure: Error | undefined;
  socket.on('data', (chunk: Buffer) => {
    buffer = Buffer.concat([buffer, chunk]);
    wake?.();
  });
  socket.on('error', (error: Error) => {
    failure = error;
    wake?.();
  });
  socket.on('close', () => {
    failure ??= new Error('the connection closed');
    wake?.();
  });
  const timer = setTimeout(() => socket.destroy(new Error('websocket timeout')), 10_000);
  const waitFor = async (ready: () => boolean) => {
    while (!ready()) {
      if (failure) throw failure;
      await new Promise<void>(resolve => (wake = resolve));
    }
  };
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('secureConnect', () => resolve());
      socket.once('error', reject);
    });
    const key = randomBytes(16).toString('base64');
    socket.write(
      `GET ${urlPath} HTTP/1.1\r\nHost: ${servername}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
    );
    await waitFor(() => buffer.includes('\r\n\r\n'));
    const end = buffer.indexOf('\r\n\r\n');
    const head = buffer.subarray(0, end).toString('latin1');
    buffer = buffer.subarray(end + 4);
    assert.match(head, /^HTTP\/1\.1 101 /, `upgrade answered:\n${head}`);
    const accept = createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
    assert.match(head, new RegExp(`^sec-websocket-accept: ${accept.replace(/[+/]/g, c => `\\${c}`)}\\s*$`, 'im'));

    const payload = Buffer.from(text, 'utf8');
    assert.ok(payload.length < 126);
    const mask = randomBytes(4);
    socket.write(Buffer.concat([Buffer.from([0x81, 0x80 | payload.length]), mask, Buffer.from(payload.map((b, i) => b ^ mask[i % 4]!))]));

    await waitFor(() => buffer.length >= 2 && buffer.length >= 2 + (buffer[1]! & 0x7f));
    assert.equal(buffer[0], 0x81, 'a final text frame');
    assert.equal(buffer[1]! & 0x80, 0, 'server frames are not masked');
    const echoed = buffer.subarray(2, 2 + (buffer[1]! & 0x7f)).toString('utf8');
    const closeMask = randomBytes(4);
    socket.write(Buffer.concat([Buffer.from([0x88, 0x82]), closeMask, Buffer.from([0x03 ^ closeMask[0]!, 0xe8 ^ closeMask[1]!])]));
    return echoed;
  } finally {
    clearTimeout(timer);
    socket.destroy();
  }
}

// --------------------------------------------------------------------------- tests

let otherSiteSha = '';
let otherLinkTarget = '';
let ordersAfterFirstRun = 0;

test('precondition: an unrelated nginx site is enabled before convex-ops installs nginx', async () => {
  const site = `server {\n    listen 80;\n    listen 8080;\n    server_name other.test;\n    root /var/www/other;\n}\n`;
  await fleet.exec(DROPLET, `mkdir -p /etc/nginx/sites-available /etc/nginx/sites-enabled /var/www/other && cat > ${OTHER_SITE} && ln -s ${OTHER_SITE} ${OTHER_LINK} && echo '${OTHER_MARKER}' > /var/www/other/index.html`, { input: site });
  otherSiteSha = await sha256Of(OTHER_SITE);
  otherLinkTarget = (await sh(`readlink ${OTHER_LINK}`)).trim();
});

// Generous: on a machine shared by many fleets, apt alone has taken minutes.
test('a fresh droplet goes through all.ts: the install, nginx for ACME, a certificate, then HTTPS, in one run', { timeout: 60 * 60_000 }, async () => {
  const before = await fleet.orderCount();
  const all = await run('all.ts');
  assert.equal(all.code, 0, describe(all) + all.output);
  const nginx = all.steps.find(s => s.step === 'nginx')!;
  assert.equal(nginx.status, 'changed');
  assert.ok(nginx.changes.includes(`create ${SITE_FILE} (HTTP, ACME challenges only)`), nginx.changes.join('\n'));
  const letsencrypt = all.steps.find(s => s.step === 'letsencrypt')!;
  assert.equal(letsencrypt.status, 'changed');
  const changes = letsencrypt.changes.join('\n');
  assert.match(changes, /order a certificate for api\.web\.test, web\.test, dashboard\.web\.test from https:\/\/pebble\.test:14000\/dir/);
  assert.match(changes, /update \/etc\/nginx\/sites-available\/convex-convex-self-hosted\.conf \(HTTPS\)/);
  assert.match(changes, /reload nginx/);
  for (const check of ['nginx-config', 'https-chain', 'certificate-expiry', 'websocket', 'dashboard-restricted', 'backend-ports-local']) {
    assert.equal(all.steps.find(s => s.step === `check ${check}`)?.status, 'ok', `check ${check}: ${describe(all)}`);
  }
  ordersAfterFirstRun = await fleet.orderCount();
  assert.equal(ordersAfterFirstRun, before + 1, 'exactly one order');
  assert.equal((await sh(`readlink /etc/nginx/sites-enabled/convex-convex-self-hosted.conf`)).trim(), SITE_FILE);
  assert.equal(await sh(`ls -A ${PENDING_DIR}`), '', 'no reload or restart is left pending');
});

test('from the test host: all three names serve HTTPS with a chain valid against pebble', async () => {
  const api = await httpsGet(DOMAINS.api, '/');
  assert.equal(api.status, 200);
  assert.match(api.body, /This Convex deployment is running/);
  assert.equal((await httpsGet(DOMAINS.api, '/instance_name')).body, 'convex-self-hosted');

  // The site name goes to 3211, which hands it to the backend's HTTP actions (the stand-in echoes).
  const site = await httpsGet(DOMAINS.site, '/hello?x=1');
  assert.equal(site.status, 200);
  const echo = JSON.parse(site.body) as { path: string; headers: Record<string, string>; site_origin: string };
  assert.equal(echo.path, '/hello');
  assert.equal(echo.headers['x-forwarded-proto'], 'https');
  assert.equal(echo.headers['x-forwarded-host'], DOMAINS.site);
  assert.ok(echo.headers['x-forwarded-for'], 'X-Forwarded-For is set');

  // The dashboard answers over TLS, but the test host is not in dashboard_allow.
  const dashboard = await httpsGet(DOMAINS.dashboard, '/');
  assert.equal(dashboard.status, 403);

  // Every name is in the one certificate, and a name outside it is refused by the verifier.
  const names = await sh(`openssl x509 -in /etc/letsencrypt/live/convex-convex-self-hosted/cert.pem -noout -ext subjectAltName`);
  for (const domain of Object.values(DOMAINS)) assert.match(names, new RegExp(`DNS:${domain.replace(/\./g, '\\.')}(,|\\s|$)`));
  await assert.rejects(httpsGet('other.test', '/'), /altnames|certificate/i);

  // Port 80 now redirects, except for ACME challenges.
  const redirect = await httpGet(DOMAINS.api, '/api/x?y=1');
  assert.equal(redirect.status, 301);
  assert.equal(redirect.headers.location, `https://${DOMAINS.api}/api/x?y=1`);
});

test('from the test host: a websocket round trip through nginx', async () => {
  const message = `hello over nginx ${randomBytes(4).toString('hex')}`;
  assert.equal(await websocketEcho(DOMAINS.api, '/api/1.0.0/sync', message), message);
});

test("TLS per Mozilla's intermediate profile on all three names: 1.2 and 1.3 only, AEAD ciphers, no session tickets, HSTS for a year or more", async () => {
  for (const name of Object.values(DOMAINS)) {
    for (const version of ['TLSv1', 'TLSv1.1'] as const) {
      assert.deepEqual(await tlsHandshake(name, { minVersion: version, maxVersion: version }), { error: 'ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION' }, `${name}: ${version} is refused by nginx`);
    }
    assert.deepEqual(await tlsHandshake(name, { minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2' }), { protocol: 'TLSv1.2', ticket: false }, `${name}: TLS 1.2, without a session ticket`);
    assert.equal(((await tlsHandshake(name, { minVersion: 'TLSv1.3' })) as { protocol: string }).protocol, 'TLSv1.3', `${name}: TLS 1.3`);
    const cbc = await tlsHandshake(name, { minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2', ciphers: 'ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:AES128-SHA:@SECLEVEL=0' });
    assert.deepEqual(cbc, { error: 'ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE' }, `${name}: CBC ciphers are refused`);

    // HSTS on every answer, the dashboard's 403 included.
    const hsts = (await httpsGet(name, '/')).headers['strict-transport-security'];
    const maxAge = Number(/max-age=(\d+)/.exec(String(hsts))?.[1]);
    assert.ok(maxAge >= 365 * 86400, `${name}: Strict-Transport-Security is ${hsts}`);
  }
  assert.equal((await httpGet(DOMAINS.api, '/')).headers['strict-transport-security'], undefined, 'no HSTS over plain HTTP');
  // pebble's certificates name no OCSP responder, so nginx is not told to staple (it would warn).
  assert.doesNotMatch(await sh(`cat ${SITE_FILE}`), /ssl_stapling/);
  assert.doesNotMatch((await fleet.exec(DROPLET, 'nginx -t 2>&1')).stdout, /warn/);
});

test("the backend's origins are the https URLs, and its ports are closed to the outside", async () => {
  const env = await sh(`docker inspect --format '{{range .Config.Env}}{{println .}}{{end}}' convex-backend`);
  assert.match(env, new RegExp(`^CONVEX_CLOUD_ORIGIN=https://${DOMAINS.api}$`, 'm'));
  assert.match(env, new RegExp(`^CONVEX_SITE_ORIGIN=https://${DOMAINS.site}$`, 'm'));
  const dashboardEnv = await sh(`docker inspect --format '{{range .Config.Env}}{{println .}}{{end}}' convex-dashboard`);
  assert.match(dashboardEnv, new RegExp(`^NEXT_PUBLIC_DEPLOYMENT_URL=https://${DOMAINS.api}$`, 'm'));
  for (const port of [3210, 3211, 6791]) assert.equal(await tcpOpen(port), false, `port ${port} is not reachable from the test host`);
});

test('a second run of all.ts changes nothing and orders nothing', { timeout: 20 * 60_000 }, async () => {
  const again = await run('all.ts');
  assert.equal(again.code, 0, describe(again));
  assert.equal(again.recap.changed, 0, `a second run changed something:\n${describe(again)}`);
  assert.ok(again.steps.some(s => s.step === 'check https-chain' && s.status === 'ok'));
  assert.equal(await fleet.orderCount(), ordersAfterFirstRun, 'no new certificate was ordered');
});

test('a broken template fails with nginx\'s message; the live configuration and HTTPS stay', { timeout: 15 * 60_000 }, async () => {
  // An operator's own templates (CONVEX_OPS_FILES), one of them with a directive nginx rejects.
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'convex-ops-files-'));
  try {
    const template = await fs.readFile(path.join(REPO_FILES, 'nginx-site.conf'), 'utf8');
    await fs.writeFile(path.join(dir, 'nginx-site.conf'), template.replace('client_max_body_size 0;', 'client_max_body_size 0;\n    proxy_bogus_directive on;'));
    const liveBefore = await sha256Of(SITE_FILE);
    const serialBefore = (await httpsGet(DOMAINS.api, '/')).serial;

    const broken = await run('nginx.ts', [], { CONVEX_OPS_FILES: dir });
    assert.equal(broken.code, 1);
    const step = broken.steps.find(s => s.step === 'nginx')!;
    assert.equal(step.status, 'failed');
    assert.match(step.detail, /nginx rejected the new configuration/);
    assert.match(step.detail, /unknown directive "proxy_bogus_directive" in \/etc\/nginx\/sites-enabled\/convex-convex-self-hosted\.conf:\d+/);
    assert.match(broken.output, /unknown directive "proxy_bogus_directive"/, 'nginx\'s message is printed');
    assert.ok(!step.changes.some(c => /reload/.test(c)), 'nginx is not reloaded');

    assert.equal(await sha256Of(SITE_FILE), liveBefore, 'the live site file is unchanged');
    assert.equal((await sh(`readlink /etc/nginx/sites-enabled/convex-convex-self-hosted.conf`)).trim(), SITE_FILE);
    assert.equal((await sh('ls -A /etc/nginx/sites-available/ | grep -c convex-ops || true')).trim(), '0', 'no temporary or previous file is left');
    assert.equal(await sh(`ls -A ${PENDING_DIR}`), '', 'the failed attempt leaves no reload pending');
    assert.equal((await fleet.exec(DROPLET, 'nginx -t', { allowFail: true })).code, 0);
    const after = await httpsGet(DOMAINS.api, '/');
    assert.equal(after.status, 200, 'nginx still serves HTTPS');
    assert.equal(after.serial, serialBefore);

    // A reload an earlier run left pending (it died before reloading) survives a rejected attempt.
    await fleet.exec(DROPLET, `touch ${PENDING_DIR}/nginx-reload`);
    const brokenAgain = await run('nginx.ts', [], { CONVEX_OPS_FILES: dir });
    assert.equal(brokenAgain.code, 1, describe(brokenAgain));
    assert.equal(await sha256Of(SITE_FILE), liveBefore);
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
  const again = await run('nginx.ts');
  assert.equal(again.code, 0, describe(again));
  assert.deepEqual(again.steps.find(s => s.step === 'nginx')!.changes, ['reload nginx'], 'only the earlier run\'s reload is left to do');
  assert.equal(await sh(`ls -A ${PENDING_DIR}`), '');
});

test('the unrelated site still serves, its files byte-identical', async () => {
  assert.equal(await sha256Of(OTHER_SITE), otherSiteSha);
  assert.equal((await sh(`readlink ${OTHER_LINK}`)).trim(), otherLinkTarget);
  const other = await httpGet('other.test', '/');
  assert.equal(other.status, 200);
  assert.equal(other.body.trim(), OTHER_MARKER);
  assert.equal((await httpGet('other.test', '/', 8080)).body.trim(), OTHER_MARKER);
});

test('firewall: a run that would lock SSH out turns the firewall off again and fails', { timeout: 30 * 60_000 }, async () => {
  // Behind a NAT from 2222 to sshd's 22: ufw allows 2222, the packets arrive as 22.
  const nat = await sshBehindNat(fleet, DROPLET, 2222);
  const variant = await fleet.writeInventory('lockout', { hosts: { [DROPLET]: { port: 2222, known_hosts: nat.knownHostsPath, firewall: true } } });

  const locked = await run('firewall.ts', ['--inventory', variant]);
  assert.equal(locked.code, 1, describe(locked));
  const step = locked.steps.find(s => s.step === 'firewall')!;
  assert.equal(step.status, 'failed');
  assert.match(step.detail, /a new SSH connection to [\d.]+:2222 failed .*so the firewall was turned off again/);
  const configure = step.changes.find(c => c.startsWith('ufw: '))!;
  assert.match(configure, /^ufw: allow 2222\/tcp; allow 80\/tcp; allow 443\/tcp; allow from [\d./]+ to any port 5432 proto tcp; .*--force enable$/, 'SSH is allowed first, enabling comes last');
  assert.match(await sh('ufw status'), /Status: inactive/);
  await nat.remove();
});

test('firewall and dashboard_allow: SSH, 80 and 443 stay open, the rest is denied; the allowed address gets the dashboard', { timeout: 20 * 60_000 }, async () => {
  // The test host reaches the droplets from the fleet network's gateway.
  const gateway = (await docker(['network', 'inspect', '--format', '{{(index .IPAM.Config 0).Gateway}}', fleet.network])).stdout.trim();
  assert.match(gateway, /^\d+\.\d+\.\d+\.\d+$/);
  const variant = await fleet.writeInventory('firewall', { hosts: { [DROPLET]: { firewall: true, dashboard_allow: [`${gateway}/32`] } } });
  assert.equal(await tcpOpen(8080), true, 'before the firewall, the unrelated site\'s 8080 is reachable');

  const first = await run('firewall.ts', ['--inventory', variant]);
  assert.equal(first.code, 0, describe(first));
  assert.deepEqual(first.steps.find(s => s.step === 'firewall')!.changes, ['ufw: allow 22/tcp; --force enable'], 'the rules of the failed run are kept; SSH comes before enabling');
  const status = await sh('ufw status verbose');
  assert.match(status, /Status: active/);
  assert.match(status, /Default: deny \(incoming\)/);
  const again = await run('firewall.ts', ['--inventory', variant]);
  assert.equal(again.code, 0, 'a new SSH connection gets in');
  assert.equal(again.recap.changed, 0, describe(again));

  assert.equal(await tcpOpen(443), true);
  assert.equal(await tcpOpen(80), true);
  assert.equal(await tcpOpen(8080), false, 'a port not allowed is closed to the outside');
  assert.equal((await sh('curl -s -H "Host: other.test" http://127.0.0.1:8080/')).trim(), OTHER_MARKER, '…and still open on the droplet');
  // The backend containers still open new connections to PostgreSQL on the Docker bridge.
  await fleet.exec(DROPLET, `docker exec convex-backend python3 -c "import socket; socket.create_connection(('host.docker.internal', 5432), 5).close()"`);

  // A change of dashboard_allow serves from the moment nginx.ts returns: the first request after
  // each run meets the new configuration, allowed and denied in turn.
  const denied = await fleet.writeInventory('firewall-denied', { hosts: { [DROPLET]: { firewall: true } } });
  const toggles = [[variant, 200], [denied, 403], [variant, 200], [denied, 403], [variant, 200]] as const;
  for (const [round, [inventory, status]] of toggles.entries()) {
    const nginx = await run('nginx.ts', ['--inventory', inventory]);
    assert.equal(nginx.code, 0, describe(nginx));
    assert.deepEqual(nginx.steps.find(s => s.step === 'nginx')!.changes, [`update ${SITE_FILE} (HTTPS)`, 'reload nginx'], `round ${round}: the site changed`);
    const dashboard = await httpsGet(DOMAINS.dashboard, '/');
    assert.equal(dashboard.status, status, `round ${round}: the first request after nginx.ts returned, with the test host ${status === 200 ? 'in' : 'not in'} dashboard_allow`);
    if (status === 200) assert.match(dashboard.body, new RegExp(`https://${DOMAINS.api.replace(/\./g, '\\.')}`));
  }
  const checks = await run('check.ts', ['--inventory', variant]);
  assert.equal(checks.code, 0, describe(checks));
  assert.equal(checks.steps.find(s => s.step === 'check dashboard-restricted')?.status, 'ok', 'the droplet\'s own address is still refused');
  assert.equal(checks.steps.find(s => s.step === 'check backend-healthy')?.status, 'ok');
});

test('firewall with domains: from outside only SSH, 80 and 443 connect, the published backend ports included', { timeout: 10 * 60_000 }, async () => {
  assert.match(await sh('ufw status'), /Status: active/, 'the firewall of the test before is on');
  const ports = [22, 80, 443, 3210, 3211, 6791, 8080];
  const open = await Promise.all(ports.map(tcpOpen));
  assert.deepEqual(ports.filter((_, i) => open[i]), [22, 80, 443]);
  // The ports are published, on loopback: the droplet itself still reaches the backend.
  assert.match(await sh('docker port convex-backend'), /^3210\/tcp -> 127\.0\.0\.1:3210$/m);
  assert.equal((await fleet.exec(DROPLET, 'curl -sf http://127.0.0.1:3210/version', { allowFail: true })).code, 0);
});

test('renewal: certbot run as the cron job runs it renews from pebble and the deploy hook reloads nginx', { timeout: 15 * 60_000 }, async () => {
  const before = await fleet.orderCount();
  const serialBefore = (await httpsGet(DOMAINS.api, '/')).serial;
  const cron = await sh('cat /etc/cron.d/convex-ops-certbot');
  assert.match(cron, /^REQUESTS_CA_BUNDLE=\/etc\/convex-ops\/acme-ca\.pem$/m);
  assert.match(cron, /certbot -q renew$/m);
  assert.match(await sh('pidof cron >/dev/null && echo running'), /running/);
  // What cron would do once the certificate is due, with only the environment the file gives it
  // (--force-renewal stands in for the 60 days nobody wants to wait; without a terminal certbot
  // first sleeps up to 8 minutes to spread renewals, which --no-random-sleep-on-renew skips).
  await fleet.exec(DROPLET, `env -i $(grep -E '^[A-Z_]+=' /etc/cron.d/convex-ops-certbot | tr '\\n' ' ') sh -c 'certbot -q renew --force-renewal --no-random-sleep-on-renew'`);
  assert.equal(await fleet.orderCount(), before + 1);
  assert.match(await sh('grep ^server /etc/letsencrypt/renewal/convex-convex-self-hosted.conf'), /pebble\.test:14000\/dir/);
  // The deploy hook returns once nginx's new workers serve: the first request gets the new certificate.
  assert.notEqual((await httpsGet(DOMAINS.api, '/')).serial, serialBefore, 'nginx serves the renewed certificate');
});
