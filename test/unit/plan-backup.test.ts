// The backup steps' plans: the backup run and what it records, the list, and the daily schedule
// on systemd and on cron. Facts in, changes out: no host.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HostMemo } from '../../scripts/lib/step.ts';
import type { Change } from '../../scripts/lib/plan.ts';
import type { Step } from '../../scripts/lib/step.ts';
import type { ScheduleFacts } from '../../scripts/lib/steps/backup.ts';
import { BACKUP_MADE, backup, backupSchedule, cronFile, listBackups, makeBackup, planBackupSchedule, renderBackupScript } from '../../scripts/lib/steps/backup.ts';
import { renderTemplate, templateText } from '../../scripts/lib/templates.ts';
import { MANAGED_MARKER } from '../../scripts/lib/files.ts';
import { absent, file, packages, testHost } from './fixtures.ts';

const labels = (changes: Change[]) => changes.map(c => c.label);
const installed = file(renderBackupScript(testHost), '755');
const unit = (name: string) => file(renderTemplate(templateText(name), { managed: MANAGED_MARKER, script: '/usr/local/sbin/convex-ops-backup', log: '/var/log/convex-ops-backup.log' }));
// The phases as their plans see them: facts in, changes out (the step's own fact names).
const plan = (step: Step, i: number, facts: Record<string, unknown>) => step.phases![i]!.plan(facts as never, testHost);

test('backup: the script installed when missing, then always one backup; its output names the backup it made and is recorded', () => {
  assert.deepEqual(labels(plan(backup, 0, { script: absent })), ['create /usr/local/sbin/convex-ops-backup', 'make a backup in /opt/convex/backups/<id>, then keep the newest 3']);
  const changes = plan(backup, 0, { script: installed });
  assert.deepEqual(labels(changes), ['make a backup in /opt/convex/backups/<id>, then keep the newest 3']);
  const [run] = changes;
  assert.equal(run!.script, '/usr/local/sbin/convex-ops-backup run');
  assert.ok(run!.streams, 'pg_dump and tar report progress');

  const memo = new HostMemo();
  const label = run!.after!('convex-ops-backup: dumping\nBACKUP 20261202T031700Z 1572864\nROTATED 20261128T031700Z\nROTATED 20261129T031700Z\n', memo);
  assert.equal(label, 'backup 20261202T031700Z (1.5 MiB, verified) in /opt/convex/backups/20261202T031700Z; rotated away 20261128T031700Z, 20261129T031700Z (keep = 3)');
  assert.deepEqual(memo.get(BACKUP_MADE), { id: '20261202T031700Z', path: '/opt/convex/backups/20261202T031700Z', bytes: 1572864, rotated: ['20261128T031700Z', '20261129T031700Z'] });
  assert.equal(run!.after!('BACKUP 20261202T031800Z 512\n', new HostMemo()), 'backup 20261202T031800Z (512 B, verified) in /opt/convex/backups/20261202T031800Z');
  assert.throws(() => run!.after!('nothing useful\n', new HostMemo()), /convex-ops-backup finished without naming its backup/);
});

test('a safety backup is not rotated and says what it is for', () => {
  const safety = makeBackup(testHost, 'the restore of 20261129T031700Z');
  assert.equal(safety.label, 'make a safety backup before the restore of 20261129T031700Z in /opt/convex/backups/<id>');
  assert.equal(safety.script, '/usr/local/sbin/convex-ops-backup run --no-rotate');
  assert.equal(safety.after!('BACKUP 20261202T031700Z 2048\n', new HostMemo()), 'safety backup before the restore of 20261129T031700Z 20261202T031700Z (2.0 KiB, verified) in /opt/convex/backups/20261202T031700Z');
});

test('the list changes nothing and names the good backups; a script that fails is an error', () => {
  const [phase] = listBackups.phases!;
  const list = [{ id: '20261128T031700Z', bytes: 2048 }, { id: '20261129T031700Z', bytes: 3 * 1024 * 1024 }];
  assert.deepEqual(phase!.plan({ list } as never, testHost), []);
  assert.equal(phase!.ok!({ list } as never, testHost), '2 good backup(s) in /opt/convex/backups: 20261128T031700Z (2.0 KiB), 20261129T031700Z (3.0 MiB)');
  assert.equal(phase!.ok!({ list: [] } as never, testHost), 'no backup in /opt/convex/backups yet');
  assert.throws(() => phase!.plan({ list: 'convex-ops-backup: error: boom' } as never, testHost), /cannot list the backups: convex-ops-backup: error: boom/);
});

const converged: ScheduleFacts = {
  script: installed,
  init: 'systemd',
  packages: packages(),
  cron: absent,
  service: unit('convex-ops-backup.service'),
  timer: unit('convex-ops-backup.timer'),
  timerState: 'enabled active',
  pending: [],
  secrets: absent,
  knownHosts: absent,
};

test('schedule on systemd: the units, then the timer enabled and started; converged, nothing', () => {
  assert.deepEqual(planBackupSchedule(converged, testHost), []);
  assert.deepEqual(labels(planBackupSchedule({ ...converged, script: absent, service: absent, timer: absent, timerState: 'disabled inactive' }, testHost)), [
    'create /usr/local/sbin/convex-ops-backup',
    'create convex-ops-backup.service',
    'create convex-ops-backup.timer',
    'enable and start convex-ops-backup.timer',
  ]);
  const changed = planBackupSchedule({ ...converged, timer: file(`# ${MANAGED_MARKER}\nold\n`) }, testHost);
  assert.deepEqual(labels(changed), ['update convex-ops-backup.timer', 'enable and start convex-ops-backup.timer']);
  assert.equal(changed[0]!.arms, 'convex-ops-backup-timer', 'a run that dies before the enable leaves it for the next run');
  assert.equal(changed[1]!.script, 'systemctl daemon-reload && systemctl enable --now convex-ops-backup.timer');
  assert.deepEqual(labels(planBackupSchedule({ ...converged, pending: ['convex-ops-backup-timer'] }, testHost)), ['enable and start convex-ops-backup.timer']);
  assert.deepEqual(labels(planBackupSchedule({ ...converged, timerState: 'enabled inactive' }, testHost)), ['enable and start convex-ops-backup.timer']);
  const timer = converged.timer.kind === 'file' ? converged.timer.content : '';
  assert.deepEqual(labels(planBackupSchedule({ ...converged, timer: file(timer, '600') }, testHost)), ['set convex-ops-backup.timer to mode 644 root:root'], 'a mode needs no enable');
});

test('schedule without systemd: cron installed, the cron.d file, cron started; converged, nothing', () => {
  const cron: ScheduleFacts = { ...converged, init: 'other', packages: packages('cron'), cron: file(cronFile()), service: absent, timer: absent, timerState: '' };
  assert.deepEqual(planBackupSchedule(cron, testHost), []);
  assert.deepEqual(labels(planBackupSchedule({ ...cron, script: absent, packages: packages(), cron: absent }, testHost)), [
    'create /usr/local/sbin/convex-ops-backup',
    'install cron',
    'create /etc/cron.d/convex-ops-backup',
  ]);
  assert.match(cronFile(), /^17 3 \* \* \* root \/usr\/local\/sbin\/convex-ops-backup scheduled >>\/var\/log\/convex-ops-backup\.log 2>&1$/m);
  // Read again after the first phase: installing cron may have started it.
  const start = (facts: { init: string; cronRunning: boolean }) => plan(backupSchedule(), 1, facts);
  assert.deepEqual(labels(start({ init: 'other', cronRunning: false })), ['start cron']);
  assert.deepEqual(start({ init: 'other', cronRunning: true }), []);
  assert.deepEqual(start({ init: 'systemd', cronRunning: false }), [], 'systemd runs the timer, not cron');
});

test('the templates come from CONVEX_OPS_FILES when it holds them', () => {
  const dir = mkdtempSync(join(tmpdir(), 'files-'));
  writeFileSync(join(dir, 'convex-ops-backup.cron'), '# {{managed}} mine\n5 4 * * * root {{script}} run\n');
  process.env.CONVEX_OPS_FILES = dir;
  try {
    assert.equal(cronFile(), `# ${MANAGED_MARKER} mine\n5 4 * * * root /usr/local/sbin/convex-ops-backup run\n`);
  } finally {
    delete process.env.CONVEX_OPS_FILES;
  }
});
