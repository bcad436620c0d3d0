// The restore's plan: a backup that is not good, or a host without Compose, is refused before
// anything changes; else the safety backup, then the backend stopped only for the database and
// the swap, each of those starting it again when it fails. Facts in, changes out: no host.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import type { RestoreFacts } from '../../scripts/lib/steps/restore.ts';
import { planRestore, restoreRun, restoreUsageProblem } from '../../scripts/lib/steps/restore.ts';
import { BACKUP_MADE, renderBackupScript } from '../../scripts/lib/steps/backup.ts';
import { HostMemo } from '../../scripts/lib/step.ts';
import { absent, file, testHost } from './fixtures.ts';

const ID = '20261129T031700Z';
const run = restoreRun(testHost, ID, new Date('2026-12-02T10:11:12.345Z'));
const facts: RestoreFacts = {
  problem: undefined,
  script: file(renderBackupScript(testHost), '755'),
  docker: { cli: true, engine: true, running: true, compose: 'v2' },
};
const labels = (f: RestoreFacts) => planRestore(f, testHost, run).map(c => c.label);

const RESTORE = [
  'make a safety backup before the restore of 20261129T031700Z in /opt/convex/backups/<id>',
  'unpack data and storage of 20261129T031700Z into /mnt/v/.convex-ops-restore-20261129T031700Z',
  'stop the backend (compose stop backend)',
  'restore database swarm_dev from 20261129T031700Z (one transaction, as convex)',
  "swap /mnt/v/{data,storage} for the backup's (the current ones kept in /mnt/v/.convex-ops-before-restore-20261202T101112Z until the backend is healthy)",
  'start the backend',
  'wait until the backend is healthy, then remove the previous folders (/mnt/v/.convex-ops-before-restore-20261202T101112Z)',
];

test('a good backup: safety backup, unpack, stop, database, swap, start, healthy', () => {
  assert.deepEqual(labels(facts), RESTORE);
  assert.deepEqual(labels({ ...facts, script: absent }), ['create /usr/local/sbin/convex-ops-backup', ...RESTORE], 'the safety backup needs the script installed');
  const [safety, , stop, , , start] = planRestore(facts, testHost, run);
  assert.equal(safety!.script, '/usr/local/sbin/convex-ops-backup run --no-rotate');
  assert.equal(stop!.script, 'cd /opt/convex && docker compose stop backend');
  assert.match(start!.script!, /^\( cd \/opt\/convex && docker compose up -d\n\)/);
  assert.match(planRestore({ ...facts, docker: { ...facts.docker, compose: 'v1' } }, testHost, run)[2]!.script!, /docker-compose stop backend/);
});

test('refusals change nothing: a backup that is not good, no Compose', () => {
  assert.throws(() => labels({ ...facts, problem: 'convex-ops-backup: error: backup 20261129T031700Z does not match its SHA256SUMS: it is damaged' }), /^Error: convex-ops-backup: error: backup 20261129T031700Z does not match its SHA256SUMS: it is damaged\. Nothing was changed\.$/);
  assert.throws(() => labels({ ...facts, problem: 'convex-ops-backup: error: no good backup 20000101T000000Z in /opt/convex/backups (good backups: none)' }), /no good backup 20000101T000000Z .*Nothing was changed\./);
  assert.throws(() => labels({ ...facts, docker: { ...facts.docker, compose: 'none' } }), /Docker Compose is not installed/);
  assert.match(restoreUsageProblem(undefined)!, /--backup ID is required/);
  assert.match(restoreUsageProblem('yesterday')!, /is not a backup id/);
  assert.equal(restoreUsageProblem(ID), undefined);
});

test('once the backend is stopped, a failed change starts it again and says what is in place', () => {
  const [, , , database, swap, start] = planRestore(facts, testHost, run);
  for (const change of [database, swap, start]) {
    execFileSync('sh', ['-n', '-c', change!.script!]);
    assert.match(change!.script!, /\nif \[ "\$status" -ne 0 \]; then\n[^]*cd \/opt\/convex && docker compose up -d[^]*exit "\$status"\nfi$/);
  }
  assert.match(database!.script!, /so the database and the folders are as they were/);
  assert.match(start!.script!, /now those of 20261129T031700Z; the previous folders are kept in \/mnt\/v\/\.convex-ops-before-restore-20261202T101112Z/);
});

test('a swap that fails reports where the folders are, as read on the host', () => {
  const swap = planRestore(facts, testHost, run)[4]!.script!;
  const report = swap.slice(swap.indexOf('left=$('), swap.indexOf('  if (cd'));
  const stateFor = (aside: string) => execFileSync('sh', ['-c', `${report.replaceAll(run.aside, aside)}\nprintf '%s' "$state"`], { encoding: 'utf8' });
  const aside = execFileSync('mktemp', ['-d'], { encoding: 'utf8' }).trim();
  assert.match(stateFor(aside), /the swap was undone, so the folders are the previous ones.*run the restore again/);
  execFileSync('mkdir', [`${aside}/data`]);
  assert.match(stateFor(aside), /the previous data could not be moved back and is in /);
  execFileSync('mkdir', [`${aside}/storage`]);
  assert.match(stateFor(aside), /the previous data and storage could not be moved back and are in /);
  execFileSync('rm', ['-rf', aside]);
});

test('a restore that ends unhealthy names the safety backup to go back with', () => {
  const wait = planRestore(facts, testHost, run).at(-1)!;
  const memo = new HostMemo();
  const failed = { code: 1, stdout: '', stderr: '@@convex-ops-failure\nthe backend stays unhealthy\n' };
  assert.match(wait.failure!(failed, memo)!, /^the backend stays unhealthy\nThe database and the folders are now those of 20261129T031700Z; the previous folders are kept in \/mnt\/v\/\.convex-ops-before-restore-20261202T101112Z\.$/);
  memo.set(BACKUP_MADE, { id: '20261202T101100Z', path: '/opt/convex/backups/20261202T101100Z', bytes: 1, rotated: [] });
  assert.match(wait.failure!(failed, memo)!, /To go back to the state before this restore: restore\.ts --backup 20261202T101100Z --yes \(the safety backup\)\.$/);
});
