// The postgres step as data: facts in, the exact changes out, for the local cluster (packages,
// the cluster started, role and database, pg_hba and listen_addresses with their handlers) and
// for an external server.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Host } from '../../scripts/lib/inventory.ts';
import type { Change } from '../../scripts/lib/plan.ts';
import { changeScript } from '../../scripts/lib/plan.ts';
import { SkipStep } from '../../scripts/lib/step.ts';
import { sh } from '../../scripts/lib/shell.ts';
import type { FileState } from '../../scripts/lib/files.ts';
import { MANAGED_MARKER } from '../../scripts/lib/files.ts';
import type { ClusterState, ConfigurationFacts } from '../../scripts/lib/steps/postgres.ts';
import { planCluster, planConfiguration, planRoleAndDatabase, postgresLocal, postgresStep, scramVerifier, withHbaBlock } from '../../scripts/lib/steps/postgres.ts';
import type { ExternalDatabase } from '../../scripts/lib/steps/postgres-external.ts';
import { externalDatabaseFact, planExternalDatabase, postgresExternal, withEnvPassword } from '../../scripts/lib/steps/postgres-external.ts';
import { postgresUrl, renderEnv } from '../../scripts/lib/steps/secret.ts';
import { renderTemplate, templateText } from '../../scripts/lib/templates.ts';
import { absent, file, packages, testHost } from './fixtures.ts';

const labels = (changes: Change[]) => changes.map(c => c.label);
/** A phase's plan with its facts untyped (Phase erases them), for the phases planned inline. */
const planOf = (phases: typeof postgresLocal.phases, i: number) => phases![i]!.plan as unknown as (facts: object, host: Host) => Change[];
const okOf = (phases: typeof postgresLocal.phases) => phases!.at(-1)!.ok as unknown as (facts: object, host: Host) => string;

const PASSWORD = 'Zx9localPasswordOfFortyCharactersxxxxxxx';
const env = file(renderEnv(new Map([['POSTGRES_PASSWORD', PASSWORD]])), '600');
const GATEWAY = '172.17.0.1';
const SUBNETS = ['172.17.0.0/16', '172.18.0.0/16'];
const LISTEN = `localhost,${GATEWAY}`;
const DEBIAN_HBA = 'local   all             postgres                                peer\nhost    all             all             127.0.0.1/32            scram-sha-256\n';

/** A cluster as a converged run leaves it. */
const converged: ClusterState = {
  version: '15', online: true, port: '5432', listen: LISTEN,
  role: { verifier: scramVerifier(PASSWORD), ours: true },
  database: { owner: 'convex' },
  sockets: ['127.0.0.1:5432', `${GATEWAY}:5432`, '0.0.0.0:22'],
};

const listenConf = `# ${MANAGED_MARKER}: the backend containers reach PostgreSQL at host.docker.internal (the Docker bridge).\nlisten_addresses = '${LISTEN}'\n`;
const dropin = renderTemplate(templateText('postgresql-after-docker.conf'), { managed: MANAGED_MARKER, gateway: GATEWAY }, 'postgresql-after-docker.conf');

/** The configuration phase's facts on a converged host, with `changes` applied. */
function configuration(changes: Partial<ConfigurationFacts> = {}): ConfigurationFacts {
  return {
    cluster: converged,
    networks: { bridgeGateway: GATEWAY, subnets: SUBNETS, convexNetwork: true },
    hba: { state: file(withHbaBlock(DEBIAN_HBA, testHost, SUBNETS), '640', 'postgres') },
    listen: { state: file(listenConf, '644', 'postgres') },
    init: 'other',
    dropin: absent,
    pending: [],
    ...changes,
  };
}

test('postgres: a fresh host installs, creates the role and database, writes the configuration and restarts once', () => {
  // Each phase sees the host as the previous phase's changes left it (the session reads it again).
  assert.deepEqual(labels(planOf(postgresLocal.phases, 0)({ packages: packages() }, testHost)), ['install postgresql']);
  const installed: ClusterState = { version: '15', online: true, port: '5432', listen: 'localhost', sockets: ['127.0.0.1:5432'] };
  assert.deepEqual(planCluster({ cluster: installed }), []);
  assert.deepEqual(labels(planRoleAndDatabase({ cluster: installed, env }, testHost)), ['create role convex', 'create database swarm_dev owned by convex']);
  const fresh = configuration({ cluster: { ...converged, listen: 'localhost', sockets: ['127.0.0.1:5432'] }, hba: { state: file(DEBIAN_HBA, '640', 'postgres') }, listen: { state: absent } });
  const changes = planConfiguration(fresh, testHost);
  assert.deepEqual(labels(changes), ['replace pg_hba.conf (the original is kept aside)', 'create conf.d/convex-ops.conf', `restart PostgreSQL (listen_addresses = '${LISTEN}')`]);
  assert.deepEqual(changes.map(c => [c.arms, c.clears]), [['postgresql-reload', undefined], ['postgresql-restart', undefined], [undefined, 'postgresql-restart']]);
  // The restart re-reads pg_hba.conf: it clears the reload that the pg_hba.conf write armed.
  assert.match(changeScript(changes[2]!)!, /pg_ctlcluster 15 main restart; fi && rm -f \/var\/lib\/convex-ops\/pending\/postgresql-reload\n\)\nrc=\$\?\n\[ "\$rc" -ne 0 \] \|\| rm -f \/var\/lib\/convex-ops\/pending\/postgresql-restart\nexit "\$rc"$/);
});

test('postgres: a converged host plans no change in any phase, and says what is in place', () => {
  assert.deepEqual(planOf(postgresLocal.phases, 0)({ packages: packages('postgresql') }, testHost), []);
  assert.deepEqual(planCluster({ cluster: converged }), []);
  assert.deepEqual(planRoleAndDatabase({ cluster: converged, env }, testHost), []);
  assert.deepEqual(planConfiguration(configuration(), testHost), []);
  assert.deepEqual(planConfiguration(configuration({ init: 'systemd', dropin: file(dropin) }), testHost), []);
  assert.equal(okOf(postgresLocal.phases)(configuration(), testHost), `role convex and database swarm_dev in place; pg_hba allows ${SUBNETS.join(', ')}; listening on ${LISTEN}`);
  assert.equal(postgresStep(testHost), postgresLocal);
});

test('postgres: a stopped cluster is started; no cluster at all is refused', () => {
  assert.deepEqual(labels(planCluster({ cluster: { ...converged, online: false } })), ['start PostgreSQL 15']);
  assert.throws(() => planCluster({ cluster: { online: false } }), /no cluster was found under \/etc\/postgresql\. Create one with pg_createcluster/);
  // What a stopped cluster shows of its roles is nothing: later phases refuse to plan from it.
  assert.throws(() => planRoleAndDatabase({ cluster: { version: '15', online: false }, env }, testHost), /PostgreSQL 15 is not running/);
});

test('postgres: a role whose password differs gets .env\'s; the verifier, never the password, is sent', () => {
  const cluster = { ...converged, role: { verifier: scramVerifier('an older password'), ours: true } };
  const changes = planRoleAndDatabase({ cluster, env }, testHost);
  assert.deepEqual(labels(changes), ['set the password of role convex']);
  assert.match(changes[0]!.stdin!, /^ALTER ROLE convex PASSWORD 'SCRAM-SHA-256\$4096:/);
  assert.ok(!changes[0]!.stdin!.includes(PASSWORD) && !changes[0]!.script!.includes(PASSWORD));
});

test('postgres: a role or a database that another application owns is refused, and nothing is planned', () => {
  const foreignRole = { ...converged, role: { verifier: scramVerifier('the other app'), ours: false } };
  assert.throws(() => planRoleAndDatabase({ cluster: foreignRole, env }, testHost), /role convex already exists, was not created by convex-ops, and its password differs from POSTGRES_PASSWORD in \/opt\/convex\/\.env/);
  // A foreign role with the same password is used as it is.
  assert.deepEqual(planRoleAndDatabase({ cluster: { ...converged, role: { verifier: scramVerifier(PASSWORD), ours: false } }, env }, testHost), []);
  // Refused before the role is created, so a refused run changes nothing.
  assert.throws(() => planRoleAndDatabase({ cluster: { ...converged, role: undefined, database: { owner: 'swarm' } }, env }, testHost), /database swarm_dev is owned by swarm, not convex\. It is left alone: set hosts\.dev\.postgres\.user = "swarm"/);
});

test('postgres: without POSTGRES_PASSWORD in .env (a dry run before the secret step writes it) the step is skipped', () => {
  assert.throws(() => planRoleAndDatabase({ cluster: converged, env: absent }, testHost), (e: Error) => e instanceof SkipStep && /POSTGRES_PASSWORD is not in \/opt\/convex\/\.env yet/.test(e.message));
});

test('postgres: a missing pg_hba block is written and PostgreSQL reloaded; a hand-broken one is refused', () => {
  const changes = planConfiguration(configuration({ hba: { state: file(DEBIAN_HBA, '640', 'postgres') } }), testHost);
  assert.deepEqual(labels(changes), ['replace pg_hba.conf (the original is kept aside)', 'reload PostgreSQL (pg_hba.conf)']);
  assert.equal(changes[0]!.arms, 'postgresql-reload');
  assert.equal(changes[1]!.clears, 'postgresql-reload');
  const ours = `${DEBIAN_HBA}\n# BEGIN ${MANAGED_MARKER} (this block is rewritten on every run)\nhost    x\n# END convex-ops\n`;
  assert.deepEqual(labels(planConfiguration(configuration({ hba: { state: file(ours, '640', 'postgres') } }), testHost)), ['update pg_hba.conf', 'reload PostgreSQL (pg_hba.conf)']);
  const twice = `${ours}# BEGIN ${MANAGED_MARKER} (this block is rewritten on every run)\n# END convex-ops\n`;
  assert.throws(() => planConfiguration(configuration({ hba: { state: file(twice, '640', 'postgres') } }), testHost), /pg_hba\.conf holds 2 .* Fix it by hand/);
  assert.throws(() => planConfiguration(configuration({ hba: { state: absent } }), testHost), /\/etc\/postgresql\/15\/main\/pg_hba\.conf is missing\./);
});

test('postgres: listen_addresses wrong in the file or in the running server means one restart', () => {
  const wrongFile = file(listenConf.replace(LISTEN, '*'), '644', 'postgres');
  assert.deepEqual(labels(planConfiguration(configuration({ cluster: { ...converged, listen: '*' }, listen: { state: wrongFile } }), testHost)), [
    'update conf.d/convex-ops.conf',
    `restart PostgreSQL (listen_addresses = '${LISTEN}')`,
  ]);
  // The file is right but the server runs with another setting (a restart that failed, or an edit by hand).
  assert.deepEqual(labels(planConfiguration(configuration({ cluster: { ...converged, listen: '*' } }), testHost)), [`restart PostgreSQL (listen_addresses = '${LISTEN}')`]);
  // A restart left pending by an interrupted run is done, whatever the server says now.
  assert.deepEqual(labels(planConfiguration(configuration({ pending: ['postgresql-restart'] }), testHost)), [`restart PostgreSQL (listen_addresses = '${LISTEN}')`]);
});

test('postgres: a server that has the setting but no socket on the bridge (started before Docker) is restarted', () => {
  const early = configuration({ cluster: { ...converged, sockets: ['127.0.0.1:5432'] } });
  assert.deepEqual(labels(planConfiguration(early, testHost)), [`restart PostgreSQL (it does not listen on ${GATEWAY}:5432)`]);
  // Without ss the live sockets are unknown: no restart on every run.
  assert.deepEqual(planConfiguration(configuration({ cluster: { ...converged, sockets: undefined } }), testHost), []);
});

test('postgres: a reload an earlier run left pending is done; a restart does it instead when one is due', () => {
  assert.deepEqual(labels(planConfiguration(configuration({ pending: ['postgresql-reload'] }), testHost)), ['reload PostgreSQL (pg_hba.conf)']);
  assert.deepEqual(labels(planConfiguration(configuration({ pending: ['postgresql-reload'], cluster: { ...converged, listen: '*' } }), testHost)), [`restart PostgreSQL (listen_addresses = '${LISTEN}')`]);
});

test('postgres: under systemd the boot-order drop-in is written and systemd reloaded, before PostgreSQL restarts', () => {
  assert.deepEqual(labels(planConfiguration(configuration({ init: 'systemd' }), testHost)), ['create postgresql@.service drop-in (start after Docker)', 'reload systemd units']);
  assert.deepEqual(labels(planConfiguration(configuration({ init: 'systemd', dropin: file(dropin), pending: ['systemd-daemon-reload'] }), testHost)), ['reload systemd units']);
  assert.deepEqual(labels(planConfiguration(configuration({ init: 'systemd', cluster: { ...converged, listen: '*' } }), testHost)), [
    'create postgresql@.service drop-in (start after Docker)',
    'reload systemd units',
    `restart PostgreSQL (listen_addresses = '${LISTEN}')`,
  ]);
});

test('postgres: without the Docker bridge the subnets to allow are unknown, and the step says to run docker.ts', () => {
  assert.throws(() => planConfiguration(configuration({ networks: { subnets: [], convexNetwork: false } }), testHost), /the Docker bridge was not found.*Run scripts\/docker\.ts first/);
});

// ------------------------------------------------------------------------------ external mode

const external: Host = { ...testHost, postgres: { mode: 'external', user: 'convex', url: 'postgresql://db.example.test:25060', password_env: 'CONVEX_OPS_TEST_PG', ca_file: '/ca.pem' } };
const EXTERNAL_PASSWORD = "p@ss:w/rd%25#?&=x'";
process.env.CONVEX_OPS_TEST_PG = EXTERNAL_PASSWORD;
const externalEnv = (password: string): FileState => file(renderEnv(new Map([['POSTGRES_URL', postgresUrl(external, password)]])), '600');
const reached = (exists: boolean): ExternalDatabase => ({ reached: true, exists, error: '' });

test('postgres external: the client and CA file, then the database when the server lacks it; the password only on stdin', () => {
  assert.equal(postgresStep(external), postgresExternal);
  const ca = mkdtempSync(join(tmpdir(), 'cxo-ca-'));
  writeFileSync(join(ca, 'ca.pem'), 'CA\n');
  const host = { ...external, postgres: { ...external.postgres, ca_file: join(ca, 'ca.pem') } };
  assert.deepEqual(labels(planOf(postgresExternal.phases, 0)({ packages: packages(), ca: absent }, host)), ['install postgresql-client', 'create the PostgreSQL CA file']);
  assert.deepEqual(planOf(postgresExternal.phases, 0)({ packages: packages('postgresql-client'), ca: file('CA\n') }, host), []);
  const [create, ...rest] = planExternalDatabase({ database: reached(false), env: externalEnv(EXTERNAL_PASSWORD) }, external);
  assert.deepEqual([create!.label, rest], ['create database swarm_dev on db.example.test:25060', []]);
  assert.equal(create!.stdin, EXTERNAL_PASSWORD + '\n');
  assert.ok(!create!.script!.includes('w/rd'), 'the password is not in the script');
  assert.match(create!.script!, /sslmode='\\''verify-full'\\''/, 'TLS is verified');
});

test('postgres external: a database already there plans nothing; a server out of reach is an error naming why', () => {
  assert.deepEqual(planExternalDatabase({ database: reached(true), env: externalEnv(EXTERNAL_PASSWORD) }, external), []);
  assert.equal(okOf(postgresExternal.phases)({}, external), 'database swarm_dev on db.example.test:25060, TLS verified');
  const refused = { reached: false, exists: false, error: 'psql: error: connection to server failed: certificate verify failed' };
  assert.throws(() => planExternalDatabase({ database: refused, env: externalEnv(EXTERNAL_PASSWORD) }, external), /cannot reach the external PostgreSQL at db\.example\.test:25060 as convex with verified TLS: .*certificate verify failed/);
});

test('postgres external: before .env holds this password (a dry run ahead of the secret step) the probe is not trusted', () => {
  for (const env of [absent, externalEnv('an older password')]) {
    assert.deepEqual(labels(planExternalDatabase({ database: { reached: false, exists: false, error: 'password authentication failed' }, env }, external)), [
      'create database swarm_dev on db.example.test:25060 unless it exists',
    ]);
  }
});

test('postgres external: the probe is a fact that waits, and takes the password from .env, decoded, never from its command line', () => {
  const fact = externalDatabaseFact(external);
  assert.ok(fact.waits);
  assert.ok(!fact.command.includes('w/rd') && !fact.command.includes(encodeURIComponent(EXTERNAL_PASSWORD)));
  assert.deepEqual(fact.parse('reached\n1\n', 0), reached(true));
  assert.deepEqual(fact.parse('reached\n\n', 0), reached(false));
  assert.deepEqual(fact.parse('failed\npsql: error: timeout expired\n', 0), { reached: false, exists: false, error: 'psql: error: timeout expired' });
  // The shell side, run here: PGPASSWORD is the password .env's POSTGRES_URL holds, percent-decoded.
  const root = mkdtempSync(join(tmpdir(), 'cxo-env-'));
  writeFileSync(join(root, '.env'), renderEnv(new Map([['POSTGRES_URL', postgresUrl(external, EXTERNAL_PASSWORD)]])));
  const printed = execFileSync('sh', ['-c', withEnvPassword({ ...external, root }, sh`printenv PGPASSWORD`)], { encoding: 'utf8' });
  assert.equal(printed, EXTERNAL_PASSWORD + '\n');
});
