// doctor.ts end to end (issue 6): one droplet is installed once; then failures are injected one
// after another, each the way it happens in real life (a hand edit applied with compose, a
// stopped PostgreSQL, a removed pg_hba block, a program on the API port, a changed secret, …),
// doctor must name the cause and the fix, and install.ts (the operator's repair) must bring the
// droplet back to healthy before the next one. fleet.exec only breaks things and looks.
//
// Two injections are honest proxies, said so where they are made: "disk nearly full" fills a
// 16 MiB tmpfs that an inventory variant names as the volume (the fleet's real volume is a Docker
// volume on the test machine's disk), and "certificate expires soon" puts a 5-day self-signed
// certificate where certbot keeps convex-<instance>'s (pebble issues long-lived ones).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { useFleet } from '../fleet/index.ts';
import type { Fleet, RunResult } from '../fleet/index.ts';

const fleet: Fleet = await useFleet({ name: 'doc1', droplets: [{ name: 'dev', user: 'root', domains: true }] });

const LONG = { timeout: 25 * 60_000 };
// The first install on a loaded shared machine can take far longer than later runs.
const INSTALL = { timeout: 50 * 60_000 };
const printed: string[] = [];
const out = (r: RunResult) => `exit ${r.code}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;
const sh = async (cmd: string) => (await fleet.exec('dev', cmd)).stdout.trim();

interface DoctorJson { exit: number; hosts: Array<{ host: string; healthy: boolean; findings: Array<{ id: string; severity: string; cause: string; fix: string }>; error?: string }> }

/** doctor.ts --json: the findings as data (stdout) and the lines an operator reads (stderr). */
async function doctor(args: string[] = []): Promise<{ run: RunResult; json: DoctorJson; text: string; ids: string[] }> {
  const run = await fleet.runScript('doctor.ts', ['--host', 'dev', '--json', ...args]);
  printed.push(run.stdout, run.stderr);
  let json: DoctorJson;
  try {
    json = JSON.parse(run.stdout) as DoctorJson;
  } catch {
    assert.fail(`doctor printed no JSON\n${out(run)}`);
  }
  assert.equal(json.exit, run.code);
  return { run, json, text: run.stderr, ids: json.hosts[0]!.findings.map(f => f.id) };
}

async function expectHealthy(): Promise<void> {
  const d = await doctor();
  assert.equal(d.run.code, 0, out(d.run));
  assert.match(d.text, /^dev +healthy +convex-backend healthy/m);
}

/** The repair an operator makes: run install.ts again. */
async function repair(): Promise<void> {
  const install = await fleet.runScript('install.ts', ['--host', 'dev']);
  printed.push(install.stdout, install.stderr);
  assert.equal(install.code, 0, out(install));
  await expectHealthy();
}

const compose = (args = 'up -d') =>
  fleet.exec('dev', `cd /opt/convex && if docker compose version >/dev/null 2>&1; then docker compose ${args}; else docker-compose ${args}; fi`, { allowFail: true });

/** Until the shell test `until` succeeds (three minutes at most). */
async function waitFor(what: string, until: string): Promise<void> {
  for (let i = 0; i < 90; i++) {
    if ((await fleet.exec('dev', until, { allowFail: true })).code === 0) return;
    await new Promise(resolve => setTimeout(resolve, 2000));
  }
  assert.fail(`timed out waiting for ${what}`);
}
/** The backend container's id and restart count, before an injection. */
const restarts = async () => (await sh(`docker inspect --format '{{.Id}} {{.RestartCount}}' convex-backend`)).split(' ') as [string, string];
/** Until the backend crashed after the injection: Docker restarted it (the same container once
 * more, or the container compose recreated at least once). */
const crashLooping = ([id, count]: [string, string]) =>
  waitFor(
    'the backend to crash-loop',
    `set -- $(docker inspect --format '{{.Id}} {{.RestartCount}}' convex-backend); if [ "$1" = ${id} ]; then [ "$2" -gt ${count} ]; else [ "$2" -ge 1 ]; fi`,
  );
const backendHealthy = () => waitFor('the backend to be healthy', `[ "$(docker inspect --format '{{.State.Health.Status}}' convex-backend)" = healthy ]`);

test('a healthy installation: doctor says so and exits 0', INSTALL, async () => {
  const install = await fleet.runScript('install.ts', ['--host', 'dev']);
  printed.push(install.stdout, install.stderr);
  assert.equal(install.code, 0, out(install));
  const d = await doctor();
  assert.equal(d.run.code, 0, out(d.run));
  assert.deepEqual(d.json.hosts[0]!.findings, []);
  assert.match(d.text, /^dev +healthy +convex-backend healthy, convex-dashboard running, PostgreSQL \d+ online, .*admin key valid, DNS points here/m);
  // Read-only: no run lock taken, nothing of the tool's state written.
  assert.equal(await sh('ls /var/lib/convex-ops/pending 2>/dev/null | wc -l'), '0');
});

test('"cluster url already contains db name": a database name put in POSTGRES_URL by hand', LONG, async () => {
  const before = await restarts();
  await fleet.exec('dev', `sed -i 's#@host.docker.internal:5432?#@host.docker.internal:5432/convex_self_hosted?#' /opt/convex/.env`);
  await compose();
  await crashLooping(before);
  const d = await doctor();
  assert.equal(d.run.code, 1, out(d.run));
  assert.ok(d.ids.includes('postgres-url-db-name') && d.ids.includes('backend-restart-loop'), d.text);
  assert.match(d.text, /^dev +problem +POSTGRES_URL contains a database name \(\/convex_self_hosted\).*the backend logs "cluster url already contains db name: \/convex_self_hosted"\. Fix: remove the database name from POSTGRES_URL.*install\.ts --host dev/m);
  assert.match(d.text, /^dev +problem +convex-backend is in a restart loop \(\d+ restarts.*caused by a database name in POSTGRES_URL/m);
  await repair();
});

test('"TLS handshake: invalid peer certificate": DO_NOT_REQUIRE_SSL removed from the compose file', LONG, async () => {
  const before = await restarts();
  await fleet.exec('dev', `sed -i '/DO_NOT_REQUIRE_SSL/d' /opt/convex/docker-compose.yml`);
  await compose();
  await crashLooping(before);
  const d = await doctor();
  assert.equal(d.run.code, 1, out(d.run));
  assert.match(d.text, /^dev +problem +the backend verifies PostgreSQL's TLS certificate, and the local server's is Debian's self-signed "snakeoil" one \(the backend lacks DO_NOT_REQUIRE_SSL=true\).*invalid peer certificate.*Fix: use both \?sslmode=disable in POSTGRES_URL and DO_NOT_REQUIRE_SSL=true/m);
  await repair();
});

test('"database X does not exist": the instance\'s database renamed away', LONG, async () => {
  const before = await restarts();
  await fleet.exec('dev', `docker stop convex-backend >/dev/null && runuser -u postgres -- psql -XAtq -c 'ALTER DATABASE convex_self_hosted RENAME TO convex_moved' && docker start convex-backend`);
  try {
    await crashLooping(before);
    const d = await doctor();
    assert.equal(d.run.code, 1, out(d.run));
    assert.match(d.text, /^dev +problem +database convex_self_hosted, which Convex uses for INSTANCE_NAME convex-self-hosted, does not exist; the backend logs ".*database "convex_self_hosted" does not exist.*Fix: .*postgres\.ts --host dev creates an empty convex_self_hosted; .*RENAME TO convex_self_hosted/m);
  } finally {
    // The fix doctor gives for data under another name: rename it back (install.ts does the rest).
    await fleet.exec('dev', `runuser -u postgres -- psql -XAtq -c 'ALTER DATABASE convex_moved RENAME TO convex_self_hosted'`);
  }
  await repair();
});

test('"database X does not exist": INSTANCE_NAME changed by hand', LONG, async () => {
  const before = await restarts();
  await fleet.exec('dev', `sed -i 's/INSTANCE_NAME: convex-self-hosted/INSTANCE_NAME: convex-other/' /opt/convex/docker-compose.yml`);
  await compose();
  await crashLooping(before);
  const d = await doctor();
  assert.equal(d.run.code, 1, out(d.run));
  // With the convex-ops pg_hba block (one database), PostgreSQL refuses convex_other before
  // saying whether it exists; doctor names INSTANCE_NAME either way.
  assert.match(d.text, /^dev +problem +\/opt\/convex\/docker-compose\.yml sets INSTANCE_NAME=convex-other where the inventory says convex-self-hosted, so the backend uses database convex_other instead of convex_self_hosted.*; the backend logs ".*convex_other.*Fix: npx zx scripts\/install\.ts --host dev puts INSTANCE_NAME=convex-self-hosted back/m);
  assert.ok(!d.ids.includes('postgres-hba'), 'the pg_hba block is not blamed');
  await repair();
});

test('connection refused: PostgreSQL stopped (as after a reboot where it did not come back)', LONG, async () => {
  const before = await restarts();
  await fleet.exec('dev', 'pg_ctlcluster "$(ls /etc/postgresql | sort -V | tail -n 1)" main stop && docker restart convex-backend');
  await crashLooping(before);
  const d = await doctor();
  assert.equal(d.run.code, 1, out(d.run));
  assert.match(d.text, /^dev +problem +PostgreSQL \d+\/main is not running, so the backend's connections are refused; the backend logs ".*Connection refused.*Fix: start it \(systemctl start postgresql@\d+-main, or pg_ctlcluster \d+ main start\)/m);
  assert.ok(d.ids.includes('backend-restart-loop'), d.text);
  await repair();
});

test('connection refused by pg_hba: the convex-ops block removed from pg_hba.conf', LONG, async () => {
  const before = await restarts();
  await fleet.exec(
    'dev',
    `v=$(ls /etc/postgresql | sort -V | tail -n 1); sed -i '/BEGIN Managed by convex-ops/,/END convex-ops/d' /etc/postgresql/$v/main/pg_hba.conf && pg_ctlcluster $v main reload && docker restart convex-backend`,
  );
  await crashLooping(before);
  const d = await doctor();
  assert.equal(d.run.code, 1, out(d.run));
  assert.match(d.text, /^dev +problem +pg_hba\.conf has no convex-ops block, so PostgreSQL rejects the backend's connections from the Docker networks .*no pg_hba\.conf entry for host/m);
  await repair();
  assert.equal(await sh('grep -c "BEGIN Managed by convex-ops" /etc/postgresql/*/main/pg_hba.conf'), '1');
});

test('a port already in use: another program on 127.0.0.1:3210 when the backend starts', LONG, async () => {
  await fleet.exec('dev', 'docker stop convex-backend >/dev/null');
  const pid = await sh('setsid nohup python3 -m http.server 3210 --bind 127.0.0.1 >/dev/null 2>&1 & echo $!');
  try {
    await waitFor('the squatter to listen', 'ss -Hltn | grep -q "127.0.0.1:3210 "');
    await fleet.exec('dev', 'docker start convex-backend', { allowFail: true });
    const d = await doctor();
    assert.equal(d.run.code, 1, out(d.run));
    assert.match(d.text, new RegExp(`^dev +problem +convex-backend cannot start: port 3210 is already in use by python3 \\(pid ${pid}\\) on 127\\.0\\.0\\.1:3210; Docker says ".*address already in use"\\. Fix: stop or move that program`, 'm'));
  } finally {
    await fleet.exec('dev', `kill ${pid}`, { allowFail: true });
  }
  await repair();
});

test('disk nearly full on the volume (proxy: a 16 MiB tmpfs named as the volume by an inventory variant)', LONG, async () => {
  await fleet.exec('dev', 'mkdir -p /mnt/doctiny && mount -t tmpfs -o size=16m tmpfs /mnt/doctiny && fallocate -l 15700k /mnt/doctiny/filler');
  try {
    const inventory = await fleet.writeInventory('doc-tiny', { hosts: { dev: { volume: '/mnt/doctiny' } } });
    const d = await doctor(['--inventory', inventory]);
    assert.equal(d.run.code, 1, out(d.run));
    assert.match(d.text, /^dev +problem +the data volume \/mnt\/doctiny \(\/mnt\/doctiny\) is (nearly )?full: 9\d% of its space used, \d+ MiB free.*Fix: free space/m);
  } finally {
    await fleet.exec('dev', 'umount /mnt/doctiny; rmdir /mnt/doctiny', { allowFail: true });
  }
});

test('a domain whose DNS does not point at the host', LONG, async () => {
  // pebble.test is another machine of the fleet; nowhere.dev.test has no record at all.
  const inventory = await fleet.writeInventory('doc-dns', { hosts: { dev: { domains: { api: 'pebble.test', dashboard: 'nowhere.dev.test' } } } });
  const d = await doctor(['--inventory', inventory]);
  assert.equal(d.run.code, 1, out(d.run));
  assert.match(d.text, /^dev +problem +pebble\.test resolves to [\d.]+, not to this droplet \([\d.]+\).*Fix: point the A \(and AAAA\) record of pebble\.test at/m);
  assert.match(d.text, /^dev +problem +nowhere\.dev\.test does not resolve/m);
  assert.doesNotMatch(d.text, /problem +dev\.test /, 'the name that does point here is fine');
});

test('a certificate that expires soon (proxy: a 5-day certificate where certbot keeps convex-<instance>\'s)', LONG, async () => {
  const existed = (await fleet.exec('dev', 'test -d /etc/letsencrypt', { allowFail: true })).code === 0;
  const dir = '/etc/letsencrypt/live/convex-convex-self-hosted';
  assert.equal((await fleet.exec('dev', `test -e ${dir}`, { allowFail: true })).code, 1, 'no certificate was issued on this droplet');
  await fleet.exec(
    'dev',
    `mkdir -p ${dir} && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 5 -subj /CN=api.dev.test ` +
      `-addext subjectAltName=DNS:api.dev.test,DNS:dev.test,DNS:dashboard.dev.test -keyout ${dir}/privkey.pem -out ${dir}/cert.pem 2>/dev/null && cp ${dir}/cert.pem ${dir}/fullchain.pem`,
  );
  try {
    const d = await doctor();
    assert.equal(d.run.code, 1, out(d.run));
    assert.match(d.text, /^dev +problem +the certificate \/etc\/letsencrypt\/live\/convex-convex-self-hosted\/cert\.pem expires in [0-5] days \(\d{4}-\d\d-\d\d\) and was not renewed.*Fix: run certbot renew --cert-name convex-convex-self-hosted/m);
  } finally {
    await fleet.exec('dev', existed ? `rm -rf ${dir}` : 'rm -rf /etc/letsencrypt');
  }
});

test('an admin key that no longer matches the instance secret: INSTANCE_SECRET changed by hand', LONG, async () => {
  await fleet.exec('dev', 'cp -p /opt/convex/.env /root/env.before && sed -i "s/^INSTANCE_SECRET=.*/INSTANCE_SECRET=$(openssl rand -hex 32)/" /opt/convex/.env');
  await compose();
  await backendHealthy();
  const d = await doctor();
  assert.equal(d.run.code, 1, out(d.run));
  assert.deepEqual(d.ids, ['admin-key'], d.text);
  assert.match(d.text, /^dev +problem +the admin key in \/opt\/convex\/\.env is refused by the backend \(HTTP 401\): it was made with another INSTANCE_SECRET.*Fix: if INSTANCE_SECRET was changed by mistake, put the old value back/m);
  // The fix doctor gives for a secret changed by mistake: the old value back, the backend recreated.
  await fleet.exec('dev', 'cp -p /root/env.before /opt/convex/.env && rm /root/env.before');
  await compose();
  await backendHealthy();
  await expectHealthy();
  const check = await fleet.runScript('install.ts', ['--host', 'dev', '--check']);
  printed.push(check.stdout, check.stderr);
  assert.equal(check.code, 0, out(check));
});

test('nothing doctor printed or logged holds a secret', async () => {
  const env = await sh('cat /opt/convex/.env');
  const secrets = ['INSTANCE_SECRET', 'POSTGRES_PASSWORD', 'CONVEX_ADMIN_KEY'].map(k => new RegExp(`^${k}=(.+)$`, 'm').exec(env)?.[1]);
  const log = readFileSync(join(fleet.dir, '.convex-ops', 'convex-ops.log'), 'utf8');
  assert.match(log, /=== \S+ doctor /);
  for (const secret of secrets) {
    assert.ok(secret && secret.length >= 20);
    assert.ok(!log.includes(secret) && !printed.some(text => text.includes(secret)), 'a secret leaked');
  }
});
