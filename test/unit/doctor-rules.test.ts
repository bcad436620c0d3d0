// Each doctor rule on its own: the state and context in, that rule's findings out. diagnose's
// tests (doctor.test.ts) check the composition; these check that each failure area finds its
// cause, finds nothing on a healthy host, and steps back where an earlier rule named the cause.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Host } from '../../scripts/lib/inventory.ts';
import type { DoctorState } from '../../scripts/lib/doctor/facts.ts';
import { parseDisk, parsePostgres } from '../../scripts/lib/doctor/facts.ts';
import { Findings, readContext } from '../../scripts/lib/doctor/rule.ts';
import type { Finding, Rule } from '../../scripts/lib/doctor/rule.ts';
import { engine } from '../../scripts/lib/doctor/engine.ts';
import { configFiles, instanceName, postgresUrl } from '../../scripts/lib/doctor/env.ts';
import { postgresAccess, postgresConnection, postgresServer } from '../../scripts/lib/doctor/postgres.ts';
import { containers } from '../../scripts/lib/doctor/containers.ts';
import { ports } from '../../scripts/lib/doctor/ports.ts';
import { api } from '../../scripts/lib/doctor/api.ts';
import { disk } from '../../scripts/lib/doctor/disk.ts';
import { certificate, dns } from '../../scripts/lib/doctor/https.ts';
import { s3Storage } from '../../scripts/lib/doctor/storage.ts';
import { DF, healthy, host, looping } from './doctor-fixtures.ts';

const external: Host = { ...host, postgres: { mode: 'external', user: 'convex', url: 'postgresql://db.example.com:25060', password_env: 'PW' } };

/** The rule's findings, with `earlier` standing for what the rules before it found. */
function apply(rule: Rule, state: DoctorState, options: { host?: Host; earlier?: Finding[] } = {}): Finding[] {
  const earlier = new Findings();
  for (const finding of options.earlier ?? []) earlier.keep(finding);
  const h = options.host ?? host;
  return rule(h, state, readContext(h, state, earlier));
}
const ids = (findings: Finding[]) => findings.map(f => f.id);
const earlierFinding = (id: string): Finding => ({ id, severity: 'problem', cause: 'an earlier rule found it', fix: 'fix it' });

const RULES: Record<string, Rule> = { engine, configFiles, postgresUrl, instanceName, postgresServer, postgresAccess, postgresConnection, containers, ports, api, disk, dns, certificate, s3Storage };

test('healthy: no rule finds anything', () => {
  for (const [name, rule] of Object.entries(RULES)) assert.deepEqual(apply(rule, healthy()), [], name);
});

test('Findings: one per id, the first kept, earlier ones count, only its own are listed', () => {
  const earlier = new Findings();
  earlier.add('a', 'problem', 'first a', 'fix');
  const found = new Findings(earlier);
  found.add('a', 'warning', 'second a', 'fix');
  found.add('b', 'problem', 'first b', 'fix');
  found.add('b', 'warning', 'second b', 'fix');
  assert.deepEqual(found.list(), [{ id: 'b', severity: 'problem', cause: 'first b', fix: 'fix' }]);
  assert.deepEqual(found.ids(), ['a', 'b']);
  assert.ok(found.has('a') && !earlier.has('b'));
});

test('engine: Docker missing says only that; Docker down and a run in progress', () => {
  const bare = healthy();
  bare.docker = { cli: false, engine: false, running: false, compose: 'none' };
  bare.lock = 'alice';
  assert.deepEqual(ids(apply(engine, bare)), ['docker-missing']);
  const down = healthy();
  down.docker.running = false;
  down.lock = 'alice@laptop (install.ts, pid 7)';
  const findings = apply(engine, down);
  assert.deepEqual(ids(findings), ['docker-down', 'run-in-progress']);
  assert.match(findings[1]!.cause, /a run is in progress on this droplet \(alice@laptop \(install\.ts, pid 7\)\)/);
});

test('configFiles: .env or compose file missing, compose not YAML, POSTGRES_URL not a URL', () => {
  const missing = healthy();
  missing.env = { present: false, content: '' };
  missing.compose = { present: false, content: '' };
  assert.deepEqual(ids(apply(configFiles, missing)), ['env-missing', 'compose-missing']);
  const broken = healthy();
  broken.compose.content = 'services: [backend';
  broken.env.content = broken.env.content.replace(/^POSTGRES_URL=.*$/m, 'POSTGRES_URL=::nonsense');
  const findings = apply(configFiles, broken);
  assert.deepEqual(ids(findings), ['compose-invalid', 'postgres-url-invalid']);
  assert.equal(findings[0]!.cause, '/opt/convex/docker-compose.yml is not valid YAML, so compose cannot start anything');
});

test('postgresUrl: a database name, no user, TLS verification, TLS disagreement', () => {
  const named = healthy();
  named.env.content = named.env.content.replace('5432?sslmode', '5432/convex_self_hosted?sslmode');
  const [dbName] = apply(postgresUrl, named);
  assert.equal(dbName?.id, 'postgres-url-db-name');
  assert.match(dbName!.cause, /^POSTGRES_URL contains a database name \(\/convex_self_hosted\), which Convex refuses: it picks the database \(convex_self_hosted\) from INSTANCE_NAME$/);
  const noUser = healthy();
  noUser.env.content = noUser.env.content.replace(/postgresql:\/\/[^@]+@/, 'postgresql://');
  assert.deepEqual(ids(apply(postgresUrl, noUser)), ['postgres-url-user']);
  const verifies = healthy();
  verifies.compose.content = verifies.compose.content.replace(/^\s*DO_NOT_REQUIRE_SSL: "true"\n/m, '');
  const [tls] = apply(postgresUrl, verifies);
  assert.match(tls!.cause, /snakeoil" one \(the backend lacks DO_NOT_REQUIRE_SSL=true\)$/);
  const disagree = looping(healthy(), ['ERROR server does not support SSL, but SSL was required']);
  assert.deepEqual(ids(apply(postgresUrl, disagree, { host: external })), ['postgres-ssl-required']);
});

test('instanceName: INSTANCE_NAME changed by hand; the backend asking for another database', () => {
  const renamed = healthy();
  renamed.compose.content = renamed.compose.content.replace('INSTANCE_NAME: convex-self-hosted', 'INSTANCE_NAME: convex-other');
  assert.deepEqual(ids(apply(instanceName, renamed)), ['instance-name']);
  const other = looping(healthy(), ['ERROR FATAL: no pg_hba.conf entry for host "172.18.0.2", user "convex", database "convex_other", no encryption']);
  const [wrong] = apply(instanceName, other);
  assert.equal(wrong?.id, 'postgres-wrong-database');
  assert.match(wrong!.cause, /asks PostgreSQL for database convex_other, but this host's database is convex_self_hosted/);
});

test('postgresServer: not installed, not running, not listening on the bridge; nothing for an external server', () => {
  const absent = healthy();
  absent.postgres = parsePostgres('');
  assert.deepEqual(ids(apply(postgresServer, absent)), ['postgres-missing']);
  const down = healthy();
  down.postgres = parsePostgres('version 15\nstatus down\nconf-listen localhost\nhba-block\nhba 172.17.0.0/16\nhba 172.18.0.0/16\n');
  assert.deepEqual(ids(apply(postgresServer, down)), ['postgres-down', 'postgres-listen']);
  const unbound = healthy();
  unbound.listeners = unbound.listeners.filter(l => l.address !== '172.17.0.1');
  assert.deepEqual(ids(apply(postgresServer, unbound)), ['postgres-not-on-bridge']);
  delete down.postgres;
  assert.deepEqual(apply(postgresServer, down, { host: external }), []);
});

test('postgresAccess: no pg_hba block, a subnet it does not cover, the database gone', () => {
  const noBlock = healthy();
  noBlock.postgres = parsePostgres('version 15\nstatus online\nlisten localhost,172.17.0.1\ndb 0\nrole 1\n');
  assert.deepEqual(ids(apply(postgresAccess, noBlock)), ['postgres-hba', 'postgres-db-missing']);
  const narrow = healthy();
  narrow.postgres!.hbaSubnets = ['172.17.0.0/16'];
  const [hba] = apply(postgresAccess, narrow);
  assert.equal(hba?.cause, "pg_hba.conf's convex-ops block does not allow 172.18.0.0/16");
});

test('postgresConnection: the wrong host, no host-gateway alias, a password, a refusal the earlier rules explain', () => {
  const wrongHost = healthy();
  wrongHost.env.content = wrongHost.env.content.replace('host.docker.internal:5432', 'localhost:5432');
  assert.deepEqual(ids(apply(postgresConnection, wrongHost)), ['postgres-host']);
  const noAlias = healthy();
  noAlias.compose.content = noAlias.compose.content.replace(/host\.docker\.internal:host-gateway/g, 'other:10.0.0.1');
  assert.deepEqual(ids(apply(postgresConnection, noAlias)), ['postgres-resolve']);
  const password = looping(healthy(), ['ERROR password authentication failed for user "convex"']);
  assert.match(apply(postgresConnection, password)[0]!.fix, /scripts\/postgres\.ts --host dev sets the role's password/);
  const refused = looping(healthy(), ['ERROR error connecting to server: Connection refused (os error 111)']);
  assert.deepEqual(ids(apply(postgresConnection, refused)), ['postgres-refused']);
  assert.deepEqual(apply(postgresConnection, refused, { earlier: [earlierFinding('postgres-down')] }), []);
  const gone = looping(healthy(), ['ERROR db error: FATAL: database "swarm_dev" does not exist']);
  assert.match(apply(postgresConnection, gone)[0]!.cause, /^database swarm_dev does not exist: Convex uses INSTANCE_NAME \(convex-self-hosted\)/);
  assert.deepEqual(apply(postgresConnection, gone, { earlier: [earlierFinding('postgres-db-missing')] }), []);
});

test('containers: missing, stopped, another image, a port conflict, a restart loop; nothing while Docker is down', () => {
  const s = healthy();
  s.containers.delete('convex-dashboard');
  s.containers.set('convex-backend', { ...s.containers.get('convex-backend')!, status: 'exited', exitCode: 137, finishedAt: '2026-11-30T10:00:00.123Z', image: 'registry.test:5000/convex-backend:v2' });
  const findings = apply(containers, s);
  assert.deepEqual(ids(findings), ['backend-stopped', 'backend-image', 'dashboard-missing']);
  assert.equal(findings[0]!.cause, 'convex-backend is exited (exit code 137, since 2026-11-30T10:00:00Z)');
  assert.equal(findings[1]!.severity, 'warning');
  const conflict = healthy();
  conflict.containers.set('convex-dashboard', { ...conflict.containers.get('convex-dashboard')!, status: 'created', error: 'Bind for 127.0.0.1:6791 failed: port is already allocated' });
  assert.deepEqual(ids(apply(containers, conflict)), ['port-6791']);
  const crashing = looping(healthy(), ['ERROR password authentication failed for user "convex"']);
  assert.match(apply(containers, crashing)[0]!.cause, /restart loop \(5 restarts, now restarting, last exit code 1\), caused by a wrong database password/);
  s.docker.running = false;
  assert.deepEqual(apply(containers, s), []);
});

test('ports: a program on a Convex port or on 80/443; the log alone; nothing twice', () => {
  const s = healthy();
  s.containers.set('convex-backend', { ...s.containers.get('convex-backend')!, status: 'exited' });
  s.listeners.push({ address: '0.0.0.0', port: 3211, process: 'python3', pid: 4242 }, { address: '0.0.0.0', port: 443, process: 'caddy', pid: 9 });
  const findings = apply(ports, s);
  assert.deepEqual(ids(findings), ['port-3211', 'port-443']);
  assert.equal(findings[0]!.cause, 'port 3211, which convex-backend publishes, is taken by python3 (pid 4242) on 0.0.0.0:3211');
  assert.deepEqual(ids(apply(ports, s, { earlier: [earlierFinding('port-3211')] })), ['port-443']);
  const logged = looping(healthy(), ['ERROR cannot listen: [Errno 98] Address already in use']);
  assert.deepEqual(ids(apply(ports, logged)), ['port-in-use']);
  assert.deepEqual(apply(ports, logged, { earlier: [earlierFinding('port-3210')] }), []);
});

test('api: unreachable, admin key refused, missing, uncheckable, and a stale local copy', () => {
  const s = healthy();
  s.http = { version: '000', adminKey: '403' };
  s.localAdminKey = 'convex-self-hosted|ffff';
  assert.deepEqual(ids(apply(api, s)), ['backend-unreachable', 'admin-key', 'admin-key-local']);
  s.http = { version: '200', adminKey: 'none' };
  assert.deepEqual(ids(apply(api, s)), ['admin-key-missing', 'admin-key-local']);
  s.http.adminKey = '404';
  delete s.localAdminKey;
  assert.deepEqual(ids(apply(api, s)), ['admin-key-unchecked']);
  const stopped = healthy();
  stopped.containers.set('convex-backend', { ...stopped.containers.get('convex-backend')!, status: 'exited' });
  stopped.http = { version: '000', adminKey: '000' };
  assert.deepEqual(apply(api, stopped), [], 'only while the backend runs');
});

test('disk: filling up is a warning, nearly full a problem; one finding per file system', () => {
  const s = healthy();
  s.disks = parseDisk(DF.replace(/35% \/mnt\/convex_dev/, '85% /mnt/convex_dev').replace(/35% \/$/m, '99% /'));
  const findings = apply(disk, s);
  assert.deepEqual(findings.map(f => [f.id, f.severity]), [['disk-/mnt/convex_dev', 'warning'], ['disk-/', 'problem']]);
  assert.match(findings[0]!.cause, /^the data volume \/mnt\/convex_dev \(\/mnt\/convex_dev\) is filling up: 85% of its space used, 66\.5 GiB free/);
  assert.match(findings[1]!.cause, /^the root file system \(\/\) is full: 99%/);
});

test('dns and certificate: a name elsewhere, no certificate names, an expiring certificate; nothing without domains', () => {
  const s = healthy();
  s.dns.names.set('dev.test', ['172.21.0.4', '203.0.113.9']);
  assert.deepEqual(ids(apply(dns, s)), ['dns-dev.test']);
  assert.deepEqual(apply(dns, s, { host: { ...host, domains: undefined } }), []);
  s.cert = { ...s.cert!, notAfter: s.cert!.now! + 10 * 86400, names: ['api.dev.test'] };
  const findings = apply(certificate, s);
  assert.deepEqual(ids(findings), ['cert-expiry', 'cert-names']);
  assert.equal(findings[1]!.cause, 'the certificate does not cover dev.test, dashboard.dev.test');
  delete s.cert;
  assert.deepEqual(apply(certificate, s), []);
});

test('s3Storage: a missing bucket, refused credentials, an unverifiable endpoint and an unreachable one, each named; none read as PostgreSQL', () => {
  const s3Host: Host = { ...host, storage: { mode: 's3', endpoint: 'https://minio.internal:9000', region: 'us-east-1', force_path_style: true, buckets: { exports_bucket: 'e', snapshot_imports_bucket: 'i', modules_bucket: 'm', files_bucket: 'f', search_bucket: 's' }, access_key_env: 'AK', secret_key_env: 'SK' } };
  const cases: Array<[string, string, RegExp]> = [
    ['ERROR S3 PUT f/abc failed: service error: NoSuchBucket', 's3-bucket-missing', /a bucket the backend uses does not exist at https:\/\/minio\.internal:9000; the backend logs .*NoSuchBucket/],
    ['ERROR S3 PUT f/abc failed: service error: AccessDenied', 's3-access-denied', /S3 refuses the backend's credentials/],
    ['ERROR S3 GET f/abc failed: service error: InvalidAccessKeyId', 's3-access-denied', /S3 refuses/],
    ['ERROR S3 PUT f/abc failed: dispatch failure: invalid peer certificate: UnknownIssuer', 's3-tls', /cannot verify the TLS certificate of https:\/\/minio\.internal:9000/],
    ['ERROR S3 PUT f/abc failed: dispatch failure: [Errno 111] Connection refused', 's3-endpoint', /cannot reach https:\/\/minio\.internal:9000/],
  ];
  for (const [line, id, cause] of cases) {
    const state = looping(healthy(), [line]);
    const findings = apply(s3Storage, state, { host: s3Host });
    assert.deepEqual(ids(findings), [id], line);
    assert.match(findings[0]!.cause, cause);
    assert.match(findings[0]!.fix, /hosts\.dev\.storage/);
    assert.deepEqual(ids(apply(postgresConnection, state, { host: s3Host })).filter(i => i.startsWith('postgres')), [], `${line} read as PostgreSQL`);
  }
});
