// all.ts --promote end to end (issue 5), on one fleet whose dev and prod are installed once and
// then reused, scenario after scenario: both start on stand-in v1; a candidate that fails its
// health check stops at dev and prod is not touched; a candidate that passes on dev but fails on
// prod (the `fragile` stand-in with a marker on prod's volume) leaves prod rolled back to v1,
// serving its data; v2 then goes to prod as exactly the digest dev runs, the data intact, with the
// promotion recorded. The failures come first so that prod's "previous" images are still v1.
// Every product action is `npx zx scripts/all.ts …`; fleet.exec is only for assertions and for
// the marker file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import TOML from '@iarna/toml';
import { useFleet } from '../fleet/index.ts';
import { adminKeyOf, backendUrl, getDocument, putDocument } from './convex-api.ts';

const fleet = await useFleet({
  name: 'promote',
  droplets: [
    { name: 'dev', user: 'root' },
    { name: 'prod', user: 'deploy', promoteFrom: 'dev' },
  ],
});

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
const prodDocument = async () => (await getDocument(backendUrl(fleet, 'prod'), prodKey, 'before-promotion')).body;

test('dev and prod start on v1; a promotion that cannot ask for confirmation refuses without --yes', async () => {
  const run = await fleet.runScript('all.ts', ['--host', 'all']);
  assert.equal(run.code, 0, output(run));
  for (const host of ['dev', 'prod']) {
    assert.match(run.stdout, new RegExp(`${host}\\s+ok=\\d+\\s+changed=\\d+\\s+failed=0.*1 connection`));
    assert.equal((await running(host)).ref, image('backend', 'v1'));
    assert.equal((await running(host, 'convex-dashboard')).ref, image('dashboard', 'v1'));
  }
  prodKey = await adminKeyOf(fleet, 'prod');
  assert.equal(await putDocument(backendUrl(fleet, 'prod'), prodKey, 'before-promotion', DOCUMENT), 200);

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
  assert.doesNotMatch(run.stdout, /── 5\/8/, 'it went on to back up prod');
  assert.equal(await containers('prod'), prodBefore, 'prod containers were changed or restarted');
  assert.equal(await sh('prod', `ls -A ${PROD_BACKUPS}`), '', 'a backup was made on prod');

  const record = lastRecord();
  assert.equal(record.outcome, 'stopped-at-dev');
  assert.equal(record.candidate.backend, image('backend', 'broken'));
  assert.equal(record.versions.from.backend.ref, image('backend', 'v1'));
  assert.equal(record.backup, undefined);
});

test('a candidate that passes on dev but fails on prod leaves prod rolled back to v1, serving its data', async () => {
  const v1 = await running('prod');
  const inventoryBefore = readFileSync(fleet.inventoryPath, 'utf8');
  await fleet.exec('prod', `touch ${MARKER}`);
  try {
    // `--promote prod`: the source is prod's promote_from.
    const run = await fleet.runScript('all.ts', ['--promote', 'prod', '--yes', '--backend-image', image('backend', 'fragile')]);
    assert.equal(run.code, 1, output(run));
    assert.match(run.stdout, /dev\s+check backend-healthy\s+ok/, 'fragile should pass on dev');
    assert.match(run.stdout, /prod\s+up\s+failed\s.*health check keeps failing.*error: 500/, 'the failure on prod is reported');
    assert.match(run.stdout, /rolling back to the images it ran before \(its data is not restored\)/);
    assert.match(run.stdout, /PROMOTION dev → prod: rolled-back/);
    assert.match(run.stdout, /failed\s+6 converge prod to dev's digests: prod up/);
    assert.match(run.stdout, /prod after rollback: (\d+)\/\1 ok/);
    assert.match(run.stdout, /restore\.ts --host prod --backup \d{8}T\d{6}Z --yes/, 'the way to the data backup is shown');

    const after = await running('prod');
    assert.equal(after.ref, image('backend', 'v1'));
    assert.equal(after.id, v1.id, 'prod runs the very image it ran before');
    assert.equal((await running('prod', 'convex-dashboard')).ref, image('dashboard', 'v1'));
    assert.equal(await sh('prod', 'curl -s http://127.0.0.1:3210/version'), 'v1');
    assert.deepEqual(await prodDocument(), DOCUMENT);
    assert.equal(readFileSync(fleet.inventoryPath, 'utf8'), inventoryBefore, 'a failed promotion must not pin anything');

    const record = lastRecord();
    assert.equal(record.outcome, 'rolled-back');
    assert.match(record.backup.id, /^\d{8}T\d{6}Z$/);
    assert.deepEqual(record.rollback, { backend: image('backend', 'v1'), dashboard: image('dashboard', 'v1') });
    assert.ok(record.stages.some((s: any) => s.stage.startsWith('6 ') && s.status === 'failed' && /prod up/.test(s.detail)), JSON.stringify(record.stages));
    assert.ok(record.checks['prod after rollback'].every((c: any) => c.status === 'ok'));
  } finally {
    await fleet.exec('prod', `rm -f ${MARKER}`);
  }
});

test('v1 → v2: prod runs exactly the digest dev runs, its data intact, the promotion recorded and pinned', async () => {
  // The candidate from the inventory this time: dev's own images.
  const inventory = await fleet.writeInventory('v2', { hosts: { dev: { backend_image: image('backend', 'v2'), dashboard_image: image('dashboard', 'v2') } } });
  const run = await fleet.runScript('all.ts', ['--promote', 'dev:prod', '--yes', '--inventory', inventory]);
  assert.equal(run.code, 0, output(run));
  assert.match(run.stdout, /PROMOTION dev → prod: promoted/);
  for (const n of [1, 2, 3, 4, 5, 6, 7]) assert.match(run.stdout, new RegExp(`── ${n}/8 `));

  for (const container of ['convex-backend', 'convex-dashboard']) {
    const dev = await running('dev', container);
    const prod = await running('prod', container);
    assert.equal(prod.id, dev.id, `${container}: prod runs another image than dev`);
    assert.match(prod.ref, /^registry\.test:5000\/convex-(backend|dashboard)@sha256:[0-9a-f]{64}$/);
    assert.ok(dev.digests.includes(prod.ref), `${container}: prod's ${prod.ref} is not one of dev's digests ${dev.digests.join(', ')}`);
  }
  assert.equal(await sh('prod', 'curl -s http://127.0.0.1:3210/version'), 'v2');
  assert.deepEqual(await prodDocument(), DOCUMENT);

  // The record: time, versions from and to, the backup, every check, the outcome; git-ignored.
  const record = lastRecord();
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
