// doctor's diagnosis as data: what the probe read (captured from a fleet droplet, then altered
// the way each failure alters it) in, findings with a cause and a fix out. No host involved.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Host } from '../../scripts/lib/inventory.ts';
import { classifyLog, currentLog, diagnose, parseDisk, parsePostgres, parsePublications } from '../../scripts/lib/doctor.ts';
import type { Finding } from '../../scripts/lib/doctor.ts';
import { redact } from '../../scripts/lib/redact.ts';
import { DF, healthy, host, looping, PASSWORD, SECRET } from './doctor-fixtures.ts';

const ids = (findings: Finding[]) => findings.map(f => f.id).sort();
const find = (findings: Finding[], id: string) => {
  const found = findings.find(f => f.id === id);
  assert.ok(found, `no finding ${id} in ${JSON.stringify(ids(findings))}`);
  assert.ok(found.cause.length > 20 && found.fix.length > 10, 'a cause and a fix');
  return found;
};

test('the probe output parses: containers, listeners, disks, PostgreSQL, log timestamps', () => {
  const s = healthy();
  assert.equal(s.containers.get('convex-backend')?.health, 'healthy');
  assert.equal(s.containers.get('convex-dashboard')?.health, undefined);
  assert.deepEqual(s.listeners.find(l => l.port === 3210), { address: '127.0.0.1', port: 3210, process: 'docker-proxy', pid: 8715 });
  assert.equal(s.listeners.find(l => l.port === 22 && l.address === '[::]')?.process, 'sshd');
  assert.deepEqual(s.disks[0], { path: '/mnt/convex_dev', filesystem: '/dev/vda', mount: '/mnt/convex_dev', sizeBytes: 270553174016, percent: 35, availableBytes: 71446429696, inodesPercent: 4 });
  assert.deepEqual(s.postgres, { installed: true, version: '15', online: true, listen: 'localhost,172.17.0.1', hbaBlock: true, hbaSubnets: ['172.17.0.0/16', '172.18.0.0/16'], database: true, role: true });
  assert.equal(s.log[0]!.time, Date.parse('2026-11-29T22:58:11.188Z'));
  assert.match(s.log[0]!.text, /^2026-11-29T22:58:11Z INFO Instance name/);
  assert.deepEqual(parsePostgres('version 15\nstatus down\nconf-listen localhost\n'), { installed: true, version: '15', online: false, listen: 'localhost', hbaBlock: false, hbaSubnets: [] });
});

test('a healthy host has no finding', () => {
  assert.deepEqual(diagnose(host, healthy()), []);
});

test('log lines name their cause, in the real backend\'s words and the stand-in\'s', () => {
  const lines = [
    'ERROR cluster url already contains db name: /convex_self_hosted',
    'ERROR Failed to connect to Postgres database convex_self_hosted: error performing TLS handshake: invalid peer certificate: UnknownIssuer',
    'ERROR db error: FATAL: database "swarm_dev" does not exist',
    'ERROR error connecting to server: Connection refused (os error 111)',
    'ERROR connection to server at "host.docker.internal" (172.17.0.1), port 5432 failed: FATAL:  no pg_hba.conf entry for host "172.18.0.2", user "convex", database "convex_self_hosted", no encryption',
    'ERROR server does not support SSL, but SSL was required',
    'ERROR password authentication failed for user "convex"',
    'ERROR could not translate host name "host.docker.internal" to address: Name or service not known',
    'ERROR cannot listen: [Errno 98] Address already in use',
  ];
  const causes = classifyLog(lines.map(text => ({ text })));
  assert.deepEqual(causes.map(c => c.id), [
    'postgres-url-db-name', 'postgres-tls', 'postgres-db-missing', 'postgres-refused', 'postgres-hba', 'postgres-ssl-required', 'postgres-password', 'postgres-resolve', 'port-in-use',
  ]);
  assert.equal(causes[0]!.detail, '/convex_self_hosted');
  assert.equal(causes[2]!.detail, 'swarm_dev');
  assert.equal(causes[4]!.detail, '172.18.0.2');
});

test('only the lines of the current run count while it is healthy: after the run before ended, even before StartedAt', () => {
  const s = healthy();
  // Restarted: the run before ended at 21:00; this one started at 22:58:09.27 by the engine's record.
  const container = { ...s.containers.get('convex-backend')!, finishedAt: '2026-11-29T21:00:00Z' };
  s.containers.set('convex-backend', container);
  const old = { time: Date.parse('2026-11-29T20:00:00Z'), text: 'ERROR cluster url already contains db name: /x' };
  // Under load the engine records StartedAt after the process has printed its first lines.
  const early = { time: Date.parse('2026-11-29T22:58:09.100Z'), text: '2026-11-29T22:58:09Z INFO Starting a Convex backend' };
  assert.deepEqual(currentLog([old, early, ...s.log], container), [early, ...s.log]);
  s.log = [old, ...s.log];
  assert.deepEqual(diagnose(host, s), [], 'an error from before the last (re)start is history');
  // Never stopped: every line is of this run.
  assert.equal(currentLog([early, ...s.log], { ...container, finishedAt: '0001-01-01T00:00:00Z' }).length, s.log.length + 1);
});

test('"cluster url already contains db name": from the log and from .env; the restart loop points at it', () => {
  const s = looping(healthy(), ['ERROR cluster url already contains db name: /convex_self_hosted']);
  s.env.content = s.env.content.replace('5432?sslmode', '5432/convex_self_hosted?sslmode');
  const findings = diagnose(host, s);
  assert.deepEqual(ids(findings), ['backend-restart-loop', 'postgres-url-db-name']);
  assert.match(find(findings, 'postgres-url-db-name').cause, /POSTGRES_URL contains a database name \(\/convex_self_hosted\).*the backend logs "cluster url already contains db name/);
  assert.match(find(findings, 'postgres-url-db-name').fix, /scripts\/install\.ts --host dev/);
  assert.match(find(findings, 'backend-restart-loop').cause, /restart loop \(5 restarts, now restarting, last exit code 1\), caused by a database name in POSTGRES_URL/);
});

test('TLS: a local server without sslmode=disable / DO_NOT_REQUIRE_SSL; an external one needs its CA', () => {
  const s = looping(healthy(), ['ERROR Failed to connect to Postgres database convex_self_hosted: error performing TLS handshake: invalid peer certificate: UnknownIssuer']);
  s.compose.content = s.compose.content.replace(/^\s*DO_NOT_REQUIRE_SSL: "true"\n/m, '');
  const tls = find(diagnose(host, s), 'postgres-tls');
  assert.match(tls.cause, /snakeoil.*the backend lacks DO_NOT_REQUIRE_SSL=true.*invalid peer certificate/);
  assert.match(tls.fix, /sslmode=disable.*DO_NOT_REQUIRE_SSL=true/);
  const external: Host = { ...host, postgres: { mode: 'external', user: 'convex', url: 'postgresql://db.example.com:25060', password_env: 'PW' } };
  const e = looping(healthy(), ['ERROR error performing TLS handshake: invalid peer certificate: UnknownIssuer']);
  e.env.content = e.env.content.replace('host.docker.internal:5432?sslmode=disable', 'db.example.com:25060');
  delete e.postgres;
  assert.match(find(diagnose(external, e), 'postgres-tls').fix, /postgres\.ca_file/);
  const ssl = looping(healthy(), ['ERROR Failed to connect: server does not support SSL, but SSL was required']);
  assert.ok(ids(diagnose(host, ssl)).includes('postgres-ssl-required'));
});

test('"database X does not exist": the database gone, or INSTANCE_NAME changed by hand', () => {
  // The instance's database renamed away: PostgreSQL says so, and so does the backend.
  const gone = looping(healthy(), ['ERROR Failed to connect to Postgres database convex_self_hosted: FATAL:  database "convex_self_hosted" does not exist']);
  gone.postgres!.database = false;
  const f = find(diagnose(host, gone), 'postgres-db-missing');
  assert.match(f.cause, /database convex_self_hosted, which Convex uses for INSTANCE_NAME convex-self-hosted, does not exist; the backend logs ".*database "convex_self_hosted" does not exist"/);
  assert.match(f.fix, /scripts\/postgres\.ts --host dev creates an empty convex_self_hosted; .*RENAME TO convex_self_hosted/);
  // INSTANCE_NAME changed: with the convex-ops pg_hba block, PostgreSQL refuses the other database
  // before it says whether it exists; either way the cause is INSTANCE_NAME, not pg_hba.
  for (const line of [
    'ERROR Failed to connect to Postgres database convex_other: FATAL:  database "convex_other" does not exist',
    'ERROR Failed to connect to Postgres database convex_other: FATAL: no pg_hba.conf entry for host "172.18.0.2", user "convex", database "convex_other", no encryption',
  ]) {
    const s = looping(healthy(), [line]);
    s.compose.content = s.compose.content.replace('INSTANCE_NAME: convex-self-hosted', 'INSTANCE_NAME: convex-other');
    const findings = diagnose(host, s);
    assert.deepEqual(ids(findings), ['backend-restart-loop', 'instance-name'], line);
    const renamed = find(findings, 'instance-name');
    assert.match(renamed.cause, /INSTANCE_NAME=convex-other where the inventory says convex-self-hosted, so the backend uses database convex_other instead of convex_self_hosted/);
    assert.match(renamed.fix, /install\.ts --host dev puts INSTANCE_NAME=convex-self-hosted back/);
  }
});

test('connection refused: PostgreSQL down, listening on localhost only, pg_hba block gone, wrong host', () => {
  const refused = ['ERROR Failed to connect to Postgres database convex_self_hosted: connection to server at "host.docker.internal" (172.17.0.1), port 5432 failed: Connection refused'];
  const down = looping(healthy(), refused);
  down.postgres = parsePostgres('version 15\nstatus down\nconf-listen localhost,172.17.0.1\nhba-block\nhba 172.17.0.0/16\nhba 172.18.0.0/16\n');
  down.listeners = down.listeners.filter(l => l.port !== 5432);
  const d = find(diagnose(host, down), 'postgres-down');
  assert.match(d.cause, /PostgreSQL 15\/main is not running.*Connection refused/);
  assert.match(d.fix, /pg_ctlcluster 15 main start/);
  assert.ok(!ids(diagnose(host, down)).includes('postgres-refused'), 'the specific cause replaces the generic one');

  const listen = looping(healthy(), refused);
  listen.postgres!.listen = 'localhost';
  assert.match(find(diagnose(host, listen), 'postgres-listen').cause, /listens on 'localhost' only.*host\.docker\.internal = 172\.17\.0\.1/);

  // After a boot where PostgreSQL started before Docker made docker0: configured, not bound.
  const beforeBridge = looping(healthy(), refused);
  beforeBridge.listeners = beforeBridge.listeners.filter(l => !(l.port === 5432 && l.address === '172.17.0.1'));
  const notOnBridge = find(diagnose(host, beforeBridge), 'postgres-not-on-bridge');
  assert.match(notOnBridge.cause, /listen_addresses includes the Docker bridge 172\.17\.0\.1, but PostgreSQL is not listening there: it started before Docker.*Connection refused/);
  assert.match(notOnBridge.fix, /restart PostgreSQL.*install\.ts --host dev/);
  assert.ok(!ids(diagnose(host, beforeBridge)).includes('postgres-listen'), 'the configuration is right: only the live state is wrong');
  assert.ok(!ids(diagnose(host, healthy())).includes('postgres-not-on-bridge'));

  const hba = looping(healthy(), ['ERROR FATAL:  no pg_hba.conf entry for host "172.18.0.2", user "convex", database "convex_self_hosted", no encryption']);
  hba.postgres = parsePostgres('version 15\nstatus online\nlisten localhost,172.17.0.1\ndb 1\nrole 1\n');
  assert.match(find(diagnose(host, hba), 'postgres-hba').cause, /pg_hba\.conf has no convex-ops block.*172\.17\.0\.0\/16, 172\.18\.0\.0\/16.*no pg_hba\.conf entry for host "172\.18\.0\.2"/);
  const narrow = healthy();
  narrow.postgres!.hbaSubnets = ['172.17.0.0/16'];
  assert.match(find(diagnose(host, narrow), 'postgres-hba').cause, /does not allow 172\.18\.0\.0\/16/);

  const wrongHost = looping(healthy(), refused);
  wrongHost.env.content = wrongHost.env.content.replace('host.docker.internal:5432', 'localhost:5432');
  assert.match(find(diagnose(host, wrongHost), 'postgres-host').cause, /points at localhost; inside the container that is the container itself/);

  const generic = looping(healthy(), refused);
  assert.match(find(diagnose(host, generic), 'postgres-refused').fix, /listen_addresses.*pg_hba.*host\.docker\.internal/);
});

test('a container in a restart loop with an unknown cause shows its last error', () => {
  const s = looping(healthy(), ['INFO Starting', 'ERROR something nobody has seen before']);
  const f = find(diagnose(host, s), 'backend-restart-loop');
  assert.match(f.cause, /its last error: "something nobody has seen before"/);
});

test('a port already in use: compose\'s start error and the program holding it', () => {
  const s = healthy();
  s.containers.set('convex-backend', {
    ...s.containers.get('convex-backend')!,
    status: 'created',
    health: 'starting',
    error: 'driver failed programming external connectivity on endpoint convex-backend (3f2a): Error starting userland proxy: listen tcp4 127.0.0.1:3210: bind: address already in use',
  });
  s.listeners = s.listeners.filter(l => l.port !== 3210).concat({ address: '0.0.0.0', port: 3210, process: 'python3', pid: 4242 });
  s.http = { version: '000', adminKey: '000' };
  const f = find(diagnose(host, s), 'port-3210');
  assert.match(f.cause, /convex-backend cannot start: port 3210 is already in use by python3 \(pid 4242\) on 0\.0\.0\.0:3210/);
  const allocated = healthy();
  allocated.containers.set('convex-dashboard', { ...allocated.containers.get('convex-dashboard')!, status: 'created', error: 'Bind for 127.0.0.1:6791 failed: port is already allocated' });
  assert.match(find(diagnose(host, allocated), 'port-6791').cause, /port 6791 is already in use \(by another container or program\)/);
  allocated.publications = parsePublications('convex-backend\t127.0.0.1:3210->3210/tcp, 127.0.0.1:3211->3211/tcp\nold-dashboard\t0.0.0.0:6791->6791/tcp, :::6791->6791/tcp');
  assert.match(find(diagnose(host, allocated), 'port-6791').cause, /port 6791 is already in use by the container old-dashboard; Docker says "Bind for 127\.0\.0\.1:6791 failed: port is already allocated"/);
  const web = healthy();
  web.listeners.push({ address: '0.0.0.0', port: 80, process: 'apache2', pid: 99 });
  assert.match(find(diagnose(host, web), 'port-80').cause, /port 80 is taken by apache2/);
});

test('disk full or nearly full on the volume; one file system is one finding', () => {
  const s = healthy();
  s.disks = parseDisk(DF.replace(/35% \/mnt\/convex_dev/, '97% /mnt/convex_dev').replace(/35% \/var\/lib\/docker/, '97% /var/lib/docker'));
  const findings = diagnose(host, s);
  assert.equal(findings.filter(f => f.id.startsWith('disk-')).length, 1);
  assert.match(find(findings, 'disk-/mnt/convex_dev').cause, /the data volume \/mnt\/convex_dev \(\/mnt\/convex_dev\) is nearly full: 97% of its space used/);
  const tiny = healthy();
  tiny.disks.push(...parseDisk('space /mnt/tiny tmpfs 16777216 16777216 0 100% /mnt/tiny\ninodes /mnt/tiny tmpfs 100 5 95 5% /mnt/tiny'));
  assert.match(find(diagnose({ ...host, volume: '/mnt/tiny' }, tiny), 'disk-/mnt/tiny').cause, /is full: 100%/);
  const inodes = healthy();
  inodes.disks[0]!.inodesPercent = 95;
  assert.match(find(diagnose(host, inodes), 'disk-/mnt/convex_dev').cause, /95% of its inodes used/);
});

test('a domain whose DNS does not point at the host', () => {
  const s = healthy();
  s.dns.names.set('api.dev.test', ['172.21.0.9']);
  s.dns.names.set('dashboard.dev.test', []);
  const findings = diagnose(host, s);
  assert.match(find(findings, 'dns-api.dev.test').cause, /api\.dev\.test resolves to 172\.21\.0\.9, not to this droplet \(172\.21\.0\.4\)/);
  assert.match(find(findings, 'dns-dashboard.dev.test').cause, /does not resolve/);
});

test('a certificate that expires soon, or has expired', () => {
  const s = healthy();
  s.cert!.notAfter = s.cert!.now! + 5 * 86400 + 100;
  const f = find(diagnose(host, s), 'cert-expiry');
  assert.equal(f.severity, 'problem');
  assert.match(f.cause, /expires in 5 days/);
  s.cert!.notAfter = s.cert!.now! - 86400;
  assert.match(find(diagnose(host, s), 'cert-expiry').cause, /expired on/);
  s.cert!.notAfter = s.cert!.now! + 25 * 86400;
  assert.equal(find(diagnose(host, s), 'cert-expiry').severity, 'warning');
});

test('an admin key that no longer matches the instance secret; a stale local copy', () => {
  const s = healthy();
  s.http.adminKey = '401';
  const f = find(diagnose(host, s), 'admin-key');
  assert.match(f.cause, /refused by the backend \(HTTP 401\).*another INSTANCE_SECRET/);
  assert.match(f.fix, /scripts\/admin-key\.ts --host dev/);
  const local = healthy();
  local.localAdminKey = 'convex-self-hosted|ffff';
  assert.ok(ids(diagnose(host, local)).includes('admin-key-local'));
});

test('nothing installed, Docker down, a run in progress', () => {
  const bare = healthy();
  bare.docker = { cli: false, engine: false, running: false, compose: 'none' };
  assert.deepEqual(ids(diagnose(host, bare)), ['docker-missing']);
  const down = healthy();
  down.docker.running = false;
  assert.ok(ids(diagnose(host, down)).includes('docker-down'));
  const busy = healthy();
  busy.lock = 'alice@laptop since 10:00 (install.ts, pid 7)';
  assert.equal(find(diagnose(host, busy), 'run-in-progress').severity, 'warning');
});

test('findings never carry a secret once the .env was read', () => {
  const s = looping(healthy(), [`ERROR cannot connect with postgresql://convex:${PASSWORD}@host.docker.internal:5432/convex_self_hosted`]);
  s.env.content = s.env.content.replace('5432?sslmode', '5432/convex_self_hosted?sslmode');
  const text = redact(JSON.stringify(diagnose(host, s)));
  assert.ok(!text.includes(PASSWORD) && !text.includes(SECRET));
});
