// Planning helpers of the steps, as data: state in, wanted state out. No host involved.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import YAML from 'yaml';
import type { Host } from '../../scripts/lib/inventory.ts';
import { clusterFact, scramVerifier, verifierMatches, withHbaBlock } from '../../scripts/lib/steps/postgres.ts';
import { externalConninfo } from '../../scripts/lib/steps/postgres-external.ts';
import { conninfo } from '../../scripts/lib/libpq.ts';
import { parseEnv, passwordFromCompose, postgresUrl, renderEnv, wantedEnv } from '../../scripts/lib/steps/secret.ts';
import { renderCompose } from '../../scripts/lib/steps/compose.ts';
import { composeInputsHash } from '../../scripts/lib/steps/up.ts';
import { quote, sh } from '../../scripts/lib/shell.ts';
import { redact, registerSecret } from '../../scripts/lib/redact.ts';
import { installedPackages } from '../../scripts/lib/system.ts';
import { dockerPackagesWanted } from '../../scripts/lib/steps/docker.ts';

const host: Host = {
  name: 'dev', address: '10.0.0.1', port: 22, user: 'root', known_hosts: '/k', volume: '/mnt/v', root: '/opt/convex',
  instance_name: 'swarm-dev', backend_image: 'r/convex-backend:1', dashboard_image: 'r/convex-dashboard:1', bind_address: '0.0.0.0',
  dashboard_allow: [], firewall: false, acme: { directory: 'https://acme' }, postgres: { mode: 'local', user: 'convex' }, backup: { keep: 3 },
};

test('the pg_hba block is appended once and then replaced in place; other lines stay', () => {
  const original = 'local all postgres peer\nhost all all 127.0.0.1/32 scram-sha-256\n';
  const once = withHbaBlock(original, host, ['172.17.0.0/16']);
  assert.ok(once.startsWith(original));
  assert.match(once, /^host {4}swarm_dev {4}convex {4}172\.17\.0\.0\/16 {4}scram-sha-256$/m);
  assert.equal(withHbaBlock(once, host, ['172.17.0.0/16']), once);
  const twice = withHbaBlock(once, host, ['172.17.0.0/16', '172.18.0.0/16']);
  assert.equal(twice.split('BEGIN Managed by convex-ops').length, 2);
  assert.match(twice, /172\.18\.0\.0\/16/);
});

test('SCRAM verifiers are made and checked without logging in', () => {
  const verifier = scramVerifier('correct horse');
  assert.ok(verifierMatches(verifier, 'convex', 'correct horse'));
  assert.ok(!verifierMatches(verifier, 'convex', 'wrong'));
  const md5 = 'md5' + createHash('md5').update('secretconvex').digest('hex');
  assert.ok(verifierMatches(md5, 'convex', 'secret'), 'legacy md5 verifiers are understood too');
});

test('.env keeps INSTANCE_SECRET and other keys; passwords are URL-encoded in POSTGRES_URL', () => {
  const current = parseEnv('INSTANCE_SECRET=' + 'f'.repeat(64) + '\nMY_OWN=1\n');
  const wanted = wantedEnv(host, current);
  assert.equal(wanted.get('INSTANCE_SECRET'), 'f'.repeat(64));
  assert.equal(wanted.get('MY_OWN'), '1');
  assert.match(wanted.get('POSTGRES_PASSWORD')!, /^[A-Za-z0-9]{40}$/);
  assert.deepEqual(parseEnv(renderEnv(wanted)), wanted);
  const fresh = wantedEnv(host, new Map());
  assert.match(fresh.get('INSTANCE_SECRET')!, /^[0-9a-f]{64}$/);
  assert.equal(wantedEnv(host, new Map(), { secret: 'e'.repeat(64), project: 'convexlegacy' }).get('INSTANCE_SECRET'), 'e'.repeat(64), 'the backend-generated secret is adopted');
  assert.equal(wantedEnv(host, new Map(), { project: 'convexlegacy' }).get('COMPOSE_PROJECT_NAME'), 'convexlegacy', 'the running compose project is kept');
  assert.equal(wantedEnv(host, parseEnv('COMPOSE_PROJECT_NAME=convex\n'), { project: 'other' }).get('COMPOSE_PROJECT_NAME'), 'convex');
  const external: Host = { ...host, postgres: { mode: 'external', user: 'convex', url: 'postgresql://db.example.com:25060?sslmode=require', password_env: 'X' } };
  const url = new URL(postgresUrl(external, "p@ss:w/rd%#?'!"));
  assert.equal(decodeURIComponent(url.password), "p@ss:w/rd%#?'!");
  assert.equal(url.pathname, '');
  assert.equal(url.search, '?sslmode=require');
  assert.match(postgresUrl(host, 'abc'), /^postgresql:\/\/convex:abc@host\.docker\.internal:5432\?sslmode=disable$/);
});

test("the guide's compose file gives its database password to adopt", () => {
  const guide = 'services:\n  backend:\n    environment:\n      - POSTGRES_URL=postgresql://swarm:convexpass123@host.docker.internal:5432?sslmode=disable\n';
  assert.equal(passwordFromCompose({ ...host, postgres: { mode: 'local', user: 'swarm' } }, guide), 'convexpass123');
  assert.equal(passwordFromCompose(host, guide), undefined, 'another role: nothing to adopt');
  assert.equal(passwordFromCompose(host, ': not yaml ['), undefined);
});

test('compose: pinned images, loopback ports and https origins with domains, no secret inline', () => {
  const plain = YAML.parse(renderCompose(host));
  assert.equal(plain.services.backend.image, 'r/convex-backend:1');
  assert.deepEqual(plain.services.backend.ports, ['0.0.0.0:3210:3210', '0.0.0.0:3211:3211']);
  assert.equal(plain.services.backend.environment.CONVEX_CLOUD_ORIGIN, 'http://10.0.0.1:3210');
  assert.equal(plain.services.backend.environment.INSTANCE_SECRET, '${INSTANCE_SECRET}');
  assert.equal(plain.services.backend.environment.DO_NOT_REQUIRE_SSL, 'true');
  assert.deepEqual(plain.services.backend.volumes, ['/mnt/v/data:/convex/data']);
  const withDomains = YAML.parse(renderCompose({ ...host, bind_address: '127.0.0.1', domains: { api: 'api.x.com', site: 'x.com', dashboard: 'dash.x.com' } }));
  assert.deepEqual(withDomains.services.dashboard.ports, ['127.0.0.1:6791:6791']);
  assert.equal(withDomains.services.backend.environment.CONVEX_SITE_ORIGIN, 'https://x.com');
  assert.equal(withDomains.services.dashboard.environment.NEXT_PUBLIC_DEPLOYMENT_URL, 'https://api.x.com');
});

test('containers are recreated only when compose or the .env values it uses change', () => {
  const compose = 'x: ${INSTANCE_SECRET} ${POSTGRES_URL}';
  const base = composeInputsHash(compose, 'INSTANCE_SECRET=a\nPOSTGRES_URL=b\n');
  assert.equal(composeInputsHash(compose, 'INSTANCE_SECRET=a\nPOSTGRES_URL=b\nCONVEX_ADMIN_KEY=k\n'), base);
  assert.notEqual(composeInputsHash(compose, 'INSTANCE_SECRET=a\nPOSTGRES_URL=c\n'), base);
  assert.notEqual(composeInputsHash(compose + ' ', 'INSTANCE_SECRET=a\nPOSTGRES_URL=b\n'), base);
});

test('remote quoting and redaction', () => {
  assert.equal(quote('/opt/convex'), '/opt/convex');
  assert.equal(quote("it's $HOME"), `'it'\\''s $HOME'`);
  assert.equal(sh`ls ${['a b', 'c']} ${"x'y"}`, `ls 'a b' c 'x'\\''y'`);
  registerSecret('s3cr3t/value');
  assert.equal(redact('url=s3cr3t%2Fvalue and s3cr3t/value'), 'url=******** and ********');
});

test('packages that a killed or still running dpkg left half-way count as unfinished, not installed', () => {
  const packages = installedPackages.parse('docker.io unpacked\ncurl installed\ndocker-compose half-configured\nnginx not-installed\ncertbot config-files\npostgresql \n', 0);
  assert.deepEqual([...packages.installed], ['curl']);
  assert.deepEqual([...packages.unfinished].sort(), ['docker-compose', 'docker.io']);
});

test('the docker step finishes a half-installed engine package as itself, and leaves a complete one alone', () => {
  const packages = (installed: string[], unfinished: string[] = []) => ({ installed: new Set(installed), unfinished: new Set(unfinished) });
  const ready = { cli: true, engine: true, running: true, compose: 'v2' as const };
  const base = ['curl', 'ca-certificates'];
  assert.deepEqual(dockerPackagesWanted(ready, packages([...base, 'docker-ce'])), []);
  assert.deepEqual(dockerPackagesWanted({ ...ready, cli: false, engine: false, compose: 'none' }, packages(base)), ['docker.io', 'docker-cli|docker.io', 'docker-compose-v2|docker-compose-plugin|docker-compose']);
  assert.deepEqual(dockerPackagesWanted(ready, packages(base, ['docker.io'])), ['docker.io']);
  // Docker's own docker-ce conflicts with docker.io: asking for docker.io would fail.
  assert.deepEqual(dockerPackagesWanted(ready, packages(base, ['docker-ce'])), ['docker-ce']);
});

test('the docker step tells the CLI from the engine (Debian 13 ships them as docker-cli and docker.io)', () => {
  const packages = (installed: string[]) => ({ installed: new Set(installed), unfinished: new Set<string>() });
  const base = ['curl', 'ca-certificates'];
  const state = { cli: true, engine: true, running: true, compose: 'v2' as const };
  // docker-cli present, engine absent: the engine is installed, not only Compose.
  assert.deepEqual(dockerPackagesWanted({ ...state, engine: false, running: false }, packages(base)), ['docker.io']);
  // docker.io without its recommended docker-cli: the CLI is installed.
  assert.deepEqual(dockerPackagesWanted({ ...state, cli: false }, packages(base)), ['docker-cli|docker.io']);
  assert.deepEqual(dockerPackagesWanted({ ...state, cli: false }, packages([...base, 'docker-ce'])), ['docker-ce-cli']);
});

test('the cluster fact reads what PostgreSQL really listens on, beside its configuration', () => {
  const fact = clusterFact(host);
  const online = 'version 17\nstatus online\nlisten\tlocalhost,172.17.0.1\t\t\nport\t5432\t\t\nsockets\nsocket 127.0.0.1:5432\nsocket 0.0.0.0:22\n';
  assert.deepEqual(fact.parse(online, 0), { online: true, version: '17', listen: 'localhost,172.17.0.1', port: '5432', sockets: ['127.0.0.1:5432', '0.0.0.0:22'] });
  // Without ss the live state is unknown, not empty: the step must not restart on every run.
  assert.equal(fact.parse('version 17\nstatus online\n', 0).sockets, undefined);
});

test('libpq settings quote every value: a root with spaces cannot add or weaken a setting', () => {
  const external: Host = { ...host, root: '/opt/x sslmode=disable', postgres: { mode: 'external', user: 'convex', url: 'postgresql://db.example.com:25060', password_env: 'X', ca_file: '/ca.pem' } };
  const settings = externalConninfo(external, 'convex_self_hosted', 10);
  const pairs = [...settings.matchAll(/(\w+)='((?:\\.|[^'\\])*)'/g)].map(m => [m[1], m[2]!.replace(/\\(.)/g, '$1')]);
  assert.equal(settings.replace(/(\w+)='((?:\\.|[^'\\])*)'/g, '').trim(), '', 'nothing outside the quoted pairs');
  assert.deepEqual(pairs.filter(([k]) => k === 'sslmode'), [['sslmode', 'verify-full']]);
  assert.deepEqual(pairs.find(([k]) => k === 'sslrootcert'), ['sslrootcert', '/opt/x sslmode=disable/config/pg-ca.pem']);
  // libpq itself reads a quoted value whole, quotes and backslashes included (psql fails on the
  // missing socket, naming the path it parsed).
  const psql = spawnSync('psql', [conninfo({ host: "/nonexistent/a b'c\\d", sslmode: 'disable', connect_timeout: 1 }), '-c', 'select 1'], { encoding: 'utf8' });
  if (!psql.error) assert.match(psql.stderr, /socket "\/nonexistent\/a b'c\\d\/\.s\.PGSQL\.5432"/);
});
