// all.ts --promote end to end (issues 5 and 17), on one fleet whose dev and prod (with domains,
// nginx and a pebble certificate) are installed once and then reused, scenario after scenario:
// both start on stand-in v1; a candidate that fails its health check stops at dev and prod is
// not touched; candidates that pass on dev but fail on prod (the `fragile` stand-ins, with a
// marker on prod's volume) leave prod on v1 with its data: `fragile-v1` migrated nothing, so the
// images alone go back; `fragile` migrated the database, so prod is restored from the backup the
// window took. Maintenance mode is switched by hand, and one left on by a promotion killed
// (SIGKILL) in its window before its candidate started is turned off by the next run; one killed
// after `fragile` migrated prod's database leaves its window open: every run refuses, changing
// nothing, until all.ts --rollback-window restores the window's backup on v1. v2 then goes to
// prod as exactly the digest dev runs, while a client asks https://api.prod.test/version every
// 100 ms: it gets 503 with Retry-After in the window, never a 502, and the window is at most 5 s.
// Last, a promotion of `fragile` killed once its candidate started on v2's database is finished
// by pinning the candidate's digests: all.ts runs it and closes the window. The failures come first so that prod's "previous" images
// are still v1. Every product action is `npx zx scripts/all.ts …`; fleet.exec is only for
// assertions and for preconditions (the marker file).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import TOML from '@iarna/toml';
import { useFleet } from '../fleet/index.ts';
import { readFile } from 'node:fs/promises';
import { adminKeyOf } from './convex-api.ts';
import { httpsRequest, probe } from './https-client.ts';
import type { ProbeReport } from './https-client.ts';

const fleet = await useFleet({
  name: 'promote',
  droplets: [
    { name: 'dev', user: 'root' },
    { name: 'prod', user: 'deploy', promoteFrom: 'dev', domains: true },
  ],
});
const prodClient = { ip: fleet.droplets.prod!.ip, ca: await readFile(fleet.acmeCaPath!, 'utf8') };
const API = 'api.prod.test';
const SITE = 'prod.test';

const image = (repo: 'backend' | 'dashboard', tag: string) => `registry.test:5000/convex-${repo}:${tag}`;
const output = (run: { stdout: string; stderr: string }) => `${run.stdout}\n${run.stderr}`;
const sh = async (droplet: string, cmd: string) => (await fleet.exec(droplet, cmd)).stdout.trim();
/** Container IDs, start times and images: "the same containers" is judged by this. */
const containers = (droplet: string) =>
  sh(droplet, "docker inspect --format '{{.Name}} {{.Id}} {{.State.StartedAt}} {{.Config.Image}} {{.Image}}' convex-backend convex-dashboard");
/** The reference a container was created from, its image ID, and that image's registry digests. */
async function running(droplet: string, container = 'convex-backend') {
  const [ref, id] = (await sh(droplet, `docker inspect --format '{{.Config.Image}} {{.Image}}' ${container}`)).split(' ');
  const digests = (await sh(droplet, `docker image inspect --format '{{join .RepoDigests " "}}' ${id}`)).split(' ').filter(Boolean);
  return { ref: ref!, id: id!, digests };
}
const PROD_BACKUPS = '/mnt/convex_prod/backups';
const MARKER = '/mnt/convex_prod/data/FAIL_HERE'; // the fragile stand-in's /convex/data/FAIL_HERE
const RECORDS = join(fleet.dir, '.convex-ops', 'promotions');
/** The newest promotion record, by the file name's timestamp. */
function lastRecord(): Record<string, any> {
  const file = readdirSync(RECORDS).filter(f => f.endsWith('.json')).sort().pop();
  assert.ok(file, `no promotion record in ${RECORDS}`);
  return JSON.parse(readFileSync(join(RECORDS, file), 'utf8'));
}

const DOCUMENT = { written: 'on prod, before any promotion' };
let prodKey = '';
/** A document on prod, through nginx as a client reads it. */
const prodDocument = async () => JSON.parse((await httpsRequest(prodClient, API, '/api/documents/before-promotion', { headers: { Authorization: `Convex ${prodKey}` } })).body);
const prodVersion = async () => (await httpsRequest(prodClient, API, '/version')).body;
const MAINTENANCE_FLAG = '/var/lib/convex-ops/maintenance/convex-self-hosted';
const PENDING_OFF = '/var/lib/convex-ops/pending/maintenance-off';
const WINDOW_RECORD = '/var/lib/convex-ops/promotion-window/convex-self-hosted.json';
/** The database's metadata version as the stand-in keeps it (model::migrations' persisted version). */
const DATABASE_VERSION = `runuser -u postgres -- psql -XAt -d convex_self_hosted -c "select json_value from persistence_globals where key = 'database_version'"`;
const databaseVersion = () => sh('prod', DATABASE_VERSION);

/** What a client saw during a promotion: only 200s and 503s with Retry-After and JSON, never a 502 or nothing. */
function assertClientsSaw503NotBadGateway(report: ProbeReport): void {
  const summary = JSON.stringify([...report.statuses]);
  assert.deepEqual([...report.statuses.keys()].filter(status => status !== 200 && status !== 503), [], `clients got other answers than 200 and 503: ${summary}`);
  const unavailable = report.samples.filter(s => s.status === 503);
  assert.ok(unavailable.length > 0, `no 503 seen during the window: ${summary}`);
  for (const sample of unavailable) {
    assert.equal(sample.retryAfter, '5');
    assert.match(sample.contentType ?? '', /^application\/json/);
    assert.equal(JSON.parse(sample.body).code, 'Maintenance');
  }
}

test('dev and prod start on v1; a promotion that cannot ask for confirmation refuses without --yes', async () => {
  const run = await fleet.runScript('all.ts', ['--host', 'all']);
  assert.equal(run.code, 0, output(run));
  for (const host of ['dev', 'prod']) {
    assert.match(run.stdout, new RegExp(`${host}\\s+ok=\\d+\\s+changed=\\d+\\s+failed=0.*1 connection`));
    assert.equal((await running(host)).ref, image('backend', 'v1'));
    assert.equal((await running(host, 'convex-dashboard')).ref, image('dashboard', 'v1'));
  }
  prodKey = await adminKeyOf(fleet, 'prod');
  const put = await httpsRequest(prodClient, API, '/api/documents/before-promotion', { method: 'PUT', headers: { Authorization: `Convex ${prodKey}`, 'Content-Type': 'application/json' }, body: JSON.stringify(DOCUMENT) });
  assert.equal(put.status, 200, put.body);
  assert.equal(await databaseVersion(), '1');

  const before = await containers('prod');
  const refused = await fleet.runScript('all.ts', ['--promote', 'dev:prod', '--backend-image', image('backend', 'v2')]);
  assert.equal(refused.code, 1, output(refused));
  assert.match(refused.stderr, /not interactive.*Add --yes/);
  assert.doesNotMatch(refused.stdout, /connect/);
  assert.equal(await containers('prod'), before);
});

test('a candidate that fails its health check stops at dev; prod is not touched at all', async () => {
  const prodBefore = await containers('prod');
  const run = await fleet.runScript('all.ts', ['--promote', 'dev:prod', '--yes', '--backend-image', image('backend', 'broken')]);
  assert.equal(run.code, 1, output(run));
  assert.match(run.stdout, /dev\s+up\s+failed\s.*health check keeps failing.*error: 500/, 'the health check\'s own failure is reported');
  assert.match(run.stdout, /PROMOTION dev → prod: stopped-at-dev/);
  assert.match(run.stdout, /prod was not touched/);
  assert.doesNotMatch(run.stdout, /── 5\/8/, 'it went on to prod');
  assert.equal(await containers('prod'), prodBefore, 'prod containers were changed or restarted');
  assert.equal(await sh('prod', `ls -A ${PROD_BACKUPS}`), '', 'a backup was made on prod');

  const record = lastRecord();
  assert.equal(record.outcome, 'stopped-at-dev');
  assert.equal(record.candidate.backend, image('backend', 'broken'));
  assert.equal(record.versions.from.backend.ref, image('backend', 'v1'));
  assert.equal(record.backup, undefined);
});

/** A promotion of a candidate that passes on dev and fails on prod (the fragile marker), probed by a client all along. */
async function failingPromotion(tag: string) {
  const v1 = await running('prod');
  const inventoryBefore = readFileSync(fleet.inventoryPath, 'utf8');
  await fleet.exec('prod', `touch ${MARKER}`);
  const client = probe(prodClient, API, '/version');
  let run;
  try {
    // `--promote prod`: the source is prod's promote_from.
    run = await fleet.runScript('all.ts', ['--promote', 'prod', '--yes', '--backend-image', image('backend', tag)]);
  } finally {
    await fleet.exec('prod', `rm -f ${MARKER}`);
  }
  const seen = await client.stop();
  assert.equal(run.code, 1, output(run));
  assert.match(run.stdout, /dev\s+check backend-healthy\s+ok/, 'the candidate should pass on dev');
  assert.match(run.stdout, /prod\s+window\s+failed\s.*the backend answers \/version with HTTP 500 \(for 10 s\): \/convex\/data\/FAIL_HERE exists, so this fragile stand-in fails/, 'the failure on prod is reported, in its own words');
  assert.match(run.stdout, /failed\s+6 the window on prod: .*: prod window: /);
  assert.match(run.stdout, /prod after rollback: (\d+)\/\1 ok/);

  const after = await running('prod');
  assert.equal(after.ref, image('backend', 'v1'));
  assert.equal(after.id, v1.id, 'prod runs the very image it ran before');
  assert.equal((await running('prod', 'convex-dashboard')).ref, image('dashboard', 'v1'));
  assert.equal(await prodVersion(), 'v1');
  assert.deepEqual(await prodDocument(), DOCUMENT);
  assert.equal(readFileSync(fleet.inventoryPath, 'utf8'), inventoryBefore, 'a failed promotion must not pin anything');
  assert.equal(await sh('prod', `ls ${MAINTENANCE_FLAG} ${PENDING_OFF} 2>/dev/null; true`), '', 'maintenance is off again');
  assert.equal(await sh('prod', `ls ${WINDOW_RECORD} 2>/dev/null; true`), '', 'the rollback closed the window');
  assertClientsSaw503NotBadGateway(seen);

  const record = lastRecord();
  assert.match(record.backup.id, /^\d{8}T\d{6}Z$/);
  assert.ok(record.stages.some((s: any) => s.stage.startsWith('6 ') && s.status === 'failed' && /prod window/.test(s.detail)), JSON.stringify(record.stages));
  assert.ok(record.checks['prod after rollback'].every((c: any) => c.status === 'ok'));
  assert.ok(record.window.seconds > 0, JSON.stringify(record.window));
  return { run, record };
}

test('a candidate that fails on prod without migrating its database: the previous images alone go back', async () => {
  const { run, record } = await failingPromotion('fragile-v1');
  assert.match(run.stdout, /its start migrated nothing \(db metadata version up to date at 1\), so it goes back to the images it ran before/);
  assert.match(run.stdout, /PROMOTION dev → prod: rolled-back/);
  assert.match(run.stdout, /rollback prod back to .*; data not restored \(no migration\)/);
  assert.match(run.stdout, /restore\.ts --host prod --backup \d{8}T\d{6}Z --yes/, 'the way to the data backup is shown');
  assert.equal(record.outcome, 'rolled-back');
  assert.deepEqual(record.migration, { migrated: [], upToDateAt: 1 });
  assert.deepEqual(record.rollback, { kind: 'images', images: { backend: image('backend', 'v1'), dashboard: image('dashboard', 'v1') } });
  assert.equal(await databaseVersion(), '1');
});

test('a candidate that migrated the database and then fails on prod: prod is restored from the window\'s backup, on v1', async () => {
  const { run, record } = await failingPromotion('fragile');
  assert.match(run.stdout, /its start migrated the database to version 2, .* restored from \d{8}T\d{6}Z, taken with the backend stopped just before the switch/);
  assert.match(run.stdout, /PROMOTION dev → prod: restored/);
  assert.equal(record.outcome, 'restored');
  assert.deepEqual(record.migration.migrated, [2]);
  assert.deepEqual(record.rollback, { kind: 'restore', images: { backend: image('backend', 'v1'), dashboard: image('dashboard', 'v1') }, backup: record.backup.id });
  // The database is v1's again, as the backup had it: the restore, not the images, undid the migration.
  assert.equal(await databaseVersion(), '1');
  const logs = await sh('prod', 'docker logs convex-backend 2>&1');
  assert.match(logs, /db metadata version up to date at 1/);
  assert.doesNotMatch(logs, /persisted db metadata version is ahead/, 'v1 runs on a database it understands');
});

test('maintenance by hand: 503 with Retry-After on the api and site names while on; a promotion killed in its window leaves it on, and the next run turns it off', async () => {
  const on = await fleet.runScript('all.ts', ['--host', 'prod', '--maintenance', 'on']);
  assert.equal(on.code, 0, output(on));
  for (const name of [API, SITE]) {
    const answer = await httpsRequest(prodClient, name, '/version');
    assert.equal(answer.status, 503, `${name}: ${answer.body}`);
    assert.equal(answer.headers['retry-after'], '5');
    assert.equal(JSON.parse(answer.body).code, 'Maintenance');
  }
  assert.equal(await sh('prod', `ls ${PENDING_OFF} 2>/dev/null; true`), '', 'an operator\'s switch arms nothing');
  const again = await fleet.runScript('all.ts', ['--host', 'prod', '--maintenance', 'on']);
  assert.match(again.stdout, /prod\s+maintenance\s+ok\s.*maintenance is on already/);
  const off = await fleet.runScript('all.ts', ['--host', 'prod', '--maintenance', 'off']);
  assert.equal(off.code, 0, output(off));
  assert.equal(await prodVersion(), 'v1');
  const bad = await fleet.runScript('all.ts', ['--host', 'prod', '--maintenance', 'maybe']);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /--maintenance "maybe": use --maintenance on or --maintenance off/);

  // A promotion killed (SIGKILL) as soon as its window opens on prod: clients get 503s, not a
  // dead upstream, and the next run turns maintenance off. fragile-v1 migrates nothing, so prod's
  // database is as v1 left it whenever the kill lands.
  const killer = new AbortController();
  const promotion = fleet.runScript('all.ts', ['--promote', 'prod', '--yes', '--backend-image', image('backend', 'fragile-v1')], {}, { kill: killer.signal });
  const opened = await fleet.exec('prod', `for i in $(seq 1 3000); do [ -e ${MAINTENANCE_FLAG} ] && exit 0; sleep 0.05; done; exit 1`, { allowFail: true });
  killer.abort();
  const killed = await promotion;
  assert.equal(opened.code, 0, `the window never opened on prod:\n${output(killed)}`);
  assert.doesNotMatch(killed.stdout, /PROMOTION dev → prod/, 'the promotion ran to its end before the kill');
  assert.equal((await httpsRequest(prodClient, API, '/version')).status, 503, 'maintenance is on after the kill');
  assert.equal(await sh('prod', `ls ${PENDING_OFF}`), PENDING_OFF, 'the kill left the off switch pending');
  // The window's record: open, but killed before its candidate started, so nothing migrated.
  assert.match(await sh('prod', `cat ${WINDOW_RECORD}`), /"stage":"(opened|backed-up)"/);
  const next = await fleet.runScript('all.ts', ['--host', 'prod']);
  assert.equal(next.code, 0, output(next));
  assert.match(next.stdout, /prod\s+nginx\s+changed\s.*maintenance off/);
  assert.match(next.stdout, /prod\s+promotion-window\s+changed\s.*close the promotion window \(all\.ts converged the host\)/);
  assert.equal(await sh('prod', `ls ${MAINTENANCE_FLAG} ${PENDING_OFF} ${WINDOW_RECORD} 2>/dev/null; true`), '');
  assert.equal((await running('prod')).ref, image('backend', 'v1'));
  assert.equal(await prodVersion(), 'v1');
  assert.deepEqual(await prodDocument(), DOCUMENT);
});

test('a promotion killed after its candidate migrated prod\'s database: the next run refuses and changes nothing; --rollback-window restores prod on v1 with its data', async () => {
  const inventoryBefore = readFileSync(fleet.inventoryPath, 'utf8');
  // fragile migrates the database to version 2, then answers 500 while the marker exists: the
  // kill lands while the window still waits for it, after the migration.
  await fleet.exec('prod', `touch ${MARKER}`);
  try {
    const killer = new AbortController();
    const promotion = fleet.runScript('all.ts', ['--promote', 'prod', '--yes', '--backend-image', image('backend', 'fragile')], {}, { kill: killer.signal });
    const migrated = await fleet.exec('prod', `for i in $(seq 1 3000); do [ "$(${DATABASE_VERSION} 2>/dev/null)" = 2 ] && exit 0; sleep 0.05; done; exit 1`, { allowFail: true });
    killer.abort();
    const killed = await promotion;
    assert.equal(migrated.code, 0, `the candidate never migrated prod's database:\n${output(killed)}`);
    assert.doesNotMatch(killed.stdout, /PROMOTION dev → prod/, 'the promotion ran to its end before the kill');

    const record = JSON.parse(await sh('prod', `cat ${WINDOW_RECORD}`));
    assert.equal(record.stage, 'candidate-started');
    assert.equal(record.previous.backend, image('backend', 'v1'));
    assert.match(record.candidate.backend, /^registry\.test:5000\/convex-backend@sha256:[0-9a-f]{64}$/);
    assert.match(record.backup.id, /^\d{8}T\d{6}Z$/);
    assert.equal(record.backup.quiesced, true);
    const backupId: string = record.backup.id;

    // Every run that would start the backend refuses, and changes nothing: same containers, the migrated database, maintenance still on.
    const before = await containers('prod');
    assert.equal((await running('prod')).ref, record.candidate.backend);
    const refusal = new RegExp(`promotion-window\\s+failed\\s.*window is still open on prod .* after its candidate convex-backend@sha256:[0-9a-f]{12}… had started, so the database may be migrated .* Nothing was changed\\. Either finish the promotion: pin backend_image = .* or roll it back .*npx zx scripts/all\\.ts --host prod --rollback-window ${backupId} --yes`, 's');
    for (const [script, args] of [['all.ts', ['--host', 'prod']], ['up.ts', ['--host', 'prod']]] as const) {
      const refused = await fleet.runScript(script, [...args]);
      assert.equal(refused.code, 1, output(refused));
      assert.match(refused.stdout, refusal, `${script}:\n${output(refused)}`);
    }
    assert.equal(await containers('prod'), before, 'a refused run changed prod\'s containers');
    assert.equal(await databaseVersion(), '2');
    assert.equal((await httpsRequest(prodClient, API, '/version')).status, 503, 'maintenance is still on');
    const doctor = await fleet.runScript('doctor.ts', ['--host', 'prod']);
    assert.match(output(doctor), /window is still open on prod/);

    // The way out the refusal names: the window's backup restored, v1 started, maintenance off, the window closed.
    const rollback = await fleet.runScript('all.ts', ['--host', 'prod', '--rollback-window', backupId, '--yes']);
    assert.equal(rollback.code, 0, output(rollback));
    assert.match(rollback.stdout, new RegExp(`prod\\s+restore\\s+changed\\s.*restore database convex_self_hosted from ${backupId}`));
    assert.match(rollback.stdout, /prod\s+promotion-window\s+changed\s.*close the promotion window \(rolled back, restored from/);
  } finally {
    await fleet.exec('prod', `rm -f ${MARKER}`);
  }
  assert.equal((await running('prod')).ref, image('backend', 'v1'));
  assert.equal((await running('prod', 'convex-dashboard')).ref, image('dashboard', 'v1'));
  assert.equal(await databaseVersion(), '1', 'the backup taken before the candidate started holds v1\'s database');
  assert.equal(await prodVersion(), 'v1');
  assert.deepEqual(await prodDocument(), DOCUMENT);
  assert.equal(await sh('prod', `ls ${MAINTENANCE_FLAG} ${PENDING_OFF} ${WINDOW_RECORD} 2>/dev/null; true`), '');
  assert.equal(readFileSync(fleet.inventoryPath, 'utf8'), inventoryBefore);
  const after = await fleet.runScript('all.ts', ['--host', 'prod']);
  assert.equal(after.code, 0, output(after));
  assert.match(after.stdout, /prod\s+promotion-window\s+ok\s.*no promotion window open/);
});

test('v1 → v2: prod runs exactly the digest dev runs, its data intact, the promotion recorded and pinned', async () => {
  // The candidate from the inventory this time: dev's own images.
  const inventory = await fleet.writeInventory('v2', { hosts: { dev: { backend_image: image('backend', 'v2'), dashboard_image: image('dashboard', 'v2') } } });
  const since = (await sh('prod', 'date +%s.%N')).trim();
  const client = probe(prodClient, API, '/version');
  const run = await fleet.runScript('all.ts', ['--promote', 'dev:prod', '--yes', '--inventory', inventory]);
  const seen = await client.stop();
  assert.equal(run.code, 0, output(run));
  assert.match(run.stdout, /PROMOTION dev → prod: promoted/);
  for (const n of [1, 2, 3, 4, 5, 6, 7]) assert.match(run.stdout, new RegExp(`── ${n}/8 `));

  // The window: clients got 503s with Retry-After, never a 502, for at most 5 s; the run says how long.
  assertClientsSaw503NotBadGateway(seen);
  assert.ok(seen.longestGapMs <= 5000, `clients got no answer from the backend for ${seen.longestGapMs} ms: ${JSON.stringify([...seen.statuses])}`);
  const printed = /prod answered nothing for (\d+\.\d) s \(clients got 503 with Retry-After; of it the backup (\d+\.\d) s, the candidate's start (\d+\.\d) s\)/.exec(run.stdout);
  assert.ok(printed, run.stdout);
  const record = lastRecord();
  assert.equal(Number(printed[1]), Number(record.window.seconds.toFixed(1)));
  assert.ok(record.window.seconds > 0 && record.window.seconds <= 5, JSON.stringify(record.window));
  assert.ok(record.window.backupSeconds > 0 && record.window.backupSeconds < record.window.seconds, JSON.stringify(record.window));
  // The client's gap holds the window the droplet measured (give or take one probe on either side).
  assert.ok(seen.longestGapMs >= record.window.seconds * 1000 - 300, `${seen.longestGapMs} ms seen, ${record.window.seconds} s measured`);

  // The pre-pull came before anything stopped: in the run, and in the droplet's Docker events.
  const stages = record.stages.map((s: any) => s.stage.split(' ')[0]);
  assert.ok(stages.indexOf('5') >= 0 && stages.indexOf('5') < stages.indexOf('6'), JSON.stringify(stages));
  const prePulled = run.stdout.search(/prod\s+pre-pull\s+changed\s.*pull registry\.test:5000\/convex-backend@sha256:/);
  assert.ok(prePulled >= 0 && prePulled < run.stdout.search(/prod\s+window\s+changed/), run.stdout);
  const events = (await sh('prod', `docker events --since ${since} --until "$(date +%s.%N)" --format '{{.TimeNano}} {{.Type}} {{.Action}} {{.Actor.ID}} {{.Actor.Attributes.name}}'`)).split('\n');
  const at = (line: string) => BigInt(line.split(' ')[0]!);
  const pulls = events.filter(e => / image pull registry\.test:5000\/convex-(backend|dashboard)@sha256:/.test(e));
  const backendStopped = events.filter(e => / container (kill|die|stop) \S+ convex-backend$/.test(e));
  assert.equal(pulls.length, 2, events.join('\n'));
  assert.ok(backendStopped.length > 0, events.join('\n'));
  assert.ok(pulls.every(p => at(p) < at(backendStopped[0]!)), `a pull came after the backend stopped:\n${events.join('\n')}`);

  for (const container of ['convex-backend', 'convex-dashboard']) {
    const dev = await running('dev', container);
    const prod = await running('prod', container);
    assert.equal(prod.id, dev.id, `${container}: prod runs another image than dev`);
    assert.match(prod.ref, /^registry\.test:5000\/convex-(backend|dashboard)@sha256:[0-9a-f]{64}$/);
    assert.ok(dev.digests.includes(prod.ref), `${container}: prod's ${prod.ref} is not one of dev's digests ${dev.digests.join(', ')}`);
  }
  assert.equal(await prodVersion(), 'v2');
  assert.deepEqual(await prodDocument(), DOCUMENT);
  assert.equal(await databaseVersion(), '2', 'v2 migrated the database');

  // The record: time, versions from and to, the backup, every check, the outcome; git-ignored.
  assert.equal(record.outcome, 'promoted');
  assert.ok(!Number.isNaN(Date.parse(record.time)) && Date.parse(record.finished) >= Date.parse(record.time));
  assert.equal(record.versions.from.backend.version, 'v1');
  assert.equal(record.versions.to.backend.version, 'v2');
  assert.equal(record.versions.to.backend.digest, (await running('prod')).ref);
  assert.equal(record.versions.to.dashboard.digest, (await running('prod', 'convex-dashboard')).ref);
  assert.match(record.backup.id, /^\d{8}T\d{6}Z$/);
  assert.equal(await sh('prod', `cd ${PROD_BACKUPS}/${record.backup.id} && sha256sum --quiet -c SHA256SUMS && echo good`), 'good');
  for (const host of ['dev', 'prod']) {
    assert.ok(record.checks[host].length >= 7, `${host}: ${JSON.stringify(record.checks[host])}`);
    assert.ok(record.checks[host].every((c: any) => c.status === 'ok' && c.check), JSON.stringify(record.checks[host]));
  }
  assert.equal(readFileSync(join(fleet.dir, '.convex-ops', '.gitignore'), 'utf8'), '*\n');

  // The inventory now pins prod to what it runs, comments and all; dev is as it was.
  const text = readFileSync(inventory, 'utf8');
  const pinned = TOML.parse(text) as Record<string, any>;
  assert.equal(pinned.hosts.prod.backend_image, record.versions.to.backend.digest);
  assert.equal(pinned.hosts.prod.dashboard_image, record.versions.to.dashboard.digest);
  assert.equal(pinned.hosts.dev.backend_image, image('backend', 'v2'));
  assert.match(text, /^# Written by the convex-ops test fleet/);
  assert.match(text, /# promoted from dev \(v2\) on .* by all\.ts --promote\nbackend_image = /);

  // The old inventory (prod on v1) would undo the promotion: a plain run refuses and changes nothing.
  const before = await containers('prod');
  const stale = await fleet.runScript('all.ts', ['--host', 'prod']);
  assert.equal(stale.code, 1, output(stale));
  assert.match(stale.stdout, /promotion-guard\s+failed.*would roll the promotion back.*--allow-rollback/s);
  assert.equal(await containers('prod'), before, 'the stale inventory changed prod');
});

test('a promotion killed after its candidate started, finished by pinning the candidate: all.ts runs it on its database and closes the window', async () => {
  // Prod as the v2 promotion left it, its inventory pinned to what it runs.
  const v2 = { backend: (await running('prod')).ref, dashboard: (await running('prod', 'convex-dashboard')).ref };
  const dev = { backend_image: image('backend', 'v2'), dashboard_image: image('dashboard', 'v2') };
  const pinned = await fleet.writeInventory('v2-pinned', { hosts: { dev, prod: { backend_image: v2.backend, dashboard_image: v2.dashboard } } });
  await fleet.exec('prod', `touch ${MARKER}`);
  let record: Record<string, any>;
  try {
    const killer = new AbortController();
    const promotion = fleet.runScript('all.ts', ['--promote', 'prod', '--yes', '--inventory', pinned, '--backend-image', image('backend', 'fragile')], {}, { kill: killer.signal });
    // fragile is at v2's database version: nothing migrates, but only the record knows that the candidate started.
    const started = await fleet.exec('prod', `for i in $(seq 1 3000); do grep -q '"stage":"candidate-started"' ${WINDOW_RECORD} 2>/dev/null && exit 0; sleep 0.05; done; exit 1`, { allowFail: true });
    killer.abort();
    const killed = await promotion;
    assert.equal(started.code, 0, `the candidate never started on prod:\n${output(killed)}`);
    record = JSON.parse(await sh('prod', `cat ${WINDOW_RECORD}`));
    const refused = await fleet.runScript('all.ts', ['--host', 'prod', '--inventory', pinned]);
    assert.equal(refused.code, 1, output(refused));
    assert.match(refused.stdout, /promotion-window\s+failed\s.*window is still open on prod/s);
  } finally {
    await fleet.exec('prod', `rm -f ${MARKER}`);
  }
  const finishing = await fleet.writeInventory('finishing', { hosts: { dev, prod: { backend_image: record.candidate.backend, dashboard_image: record.candidate.dashboard } } });
  const finish = await fleet.runScript('all.ts', ['--host', 'prod', '--inventory', finishing]);
  assert.equal(finish.code, 0, output(finish));
  assert.match(finish.stdout, /prod\s+promotion-window\s+ok\s.*finishing the promotion window of .*: the inventory pins its candidate/);
  assert.match(finish.stdout, /prod\s+promotion-window\s+changed\s.*close the promotion window \(all\.ts converged the host\)/);
  assert.equal((await running('prod')).ref, record.candidate.backend);
  assert.equal(await prodVersion(), 'fragile');
  assert.deepEqual(await prodDocument(), DOCUMENT);
  assert.equal(await sh('prod', `ls ${MAINTENANCE_FLAG} ${PENDING_OFF} ${WINDOW_RECORD} 2>/dev/null; true`), '');
});
