// Off-host backups (issue 16): the inventory's [backup] repository keys, the plans of the droplet
// (restic, its own key, the pinned host key, the copy, the scheduled job's password file) and of
// the SFTP target, and what restic's output becomes. Facts in, changes out: no host.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadInventory } from '../../scripts/lib/inventory.ts';
import type { Host } from '../../scripts/lib/inventory.ts';
import type { Change } from '../../scripts/lib/plan.ts';
import { HostMemo } from '../../scripts/lib/step.ts';
import { authorizedKeys, planBackupTarget } from '../../scripts/lib/steps/backup-target.ts';
import { offsiteBackup, planBackupSchedule, renderBackupScript } from '../../scripts/lib/steps/backup.ts';
import type { ScheduleFacts } from '../../scripts/lib/steps/backup.ts';
import { describeSnapshot, knownHostsChanges, OFFSITE_COPY, parseOffsiteCopy, parseSnapshots, planOffsiteClient, secretsText, sftpCommand } from '../../scripts/lib/steps/offsite.ts';
import { sftpTarget } from '../../scripts/lib/inventory/offsite.ts';
import { absent, file, offsiteHost, packages, testHost } from './fixtures.ts';

const labels = (changes: Change[]) => changes.map(c => c.label);
const dir = mkdtempSync(join(tmpdir(), 'offsite-'));
let n = 0;
function load(backup: string, extra = '') {
  const path = join(dir, `inv${n++}.toml`);
  writeFileSync(path, `[defaults]\nbackend_image = "r/b:1"\ndashboard_image = "r/d:1"\nvolume = "/mnt/v"\n[hosts.dev]\naddress = "10.0.0.1"\n[hosts.dev.backup]\n${backup}\n[hosts.vault]\naddress = "10.0.0.9"\n${extra}`);
  return loadInventory(path);
}
const rejects = (backup: string, pattern: RegExp) => assert.throws(() => load(backup), (e: Error) => pattern.test(e.message) || assert.fail(`message was: ${e.message}`));

test('inventory: a repository with its password variable, the retention defaults 7/4/6, the SFTP target parsed', () => {
  const dev = load('repository = "sftp:backup@vault.example:/srv/convex"\npassword_env = "RESTIC_PW"\nrepository_host = "vault"').hosts.get('dev')!;
  assert.deepEqual(dev.backup, {
    keep: 7,
    offsite: {
      repository: 'sftp:backup@vault.example:/srv/convex', password_env: 'RESTIC_PW', credentials_env: [], keep_daily: 7, keep_weekly: 4, keep_monthly: 6,
      repository_host: 'vault', sftp: { user: 'backup', host: 'vault.example', port: 22, path: '/srv/convex' },
    },
  });
  assert.equal(load('keep = 3').hosts.get('dev')!.backup.offsite, undefined);
  const s3 = load('repository = "s3:s3.amazonaws.com/bucket/convex"\npassword_env = "RESTIC_PW"\ncredentials_env = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]\nkeep_daily = 3').hosts.get('dev')!;
  assert.deepEqual(s3.backup.offsite?.credentials_env, ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY']);
  assert.equal(s3.backup.offsite?.sftp, undefined);
  assert.deepEqual(sftpTarget('sftp://backup@vault.example:2222//srv/convex/'), { user: 'backup', host: 'vault.example', port: 2222, path: '/srv/convex' });
});

test('inventory: every problem of [backup] named with its key and its fix, before anything connects', () => {
  rejects('repository = "/srv/backups"\npassword_env = "P"', /hosts\.dev\.backup\.repository: "\/srv\/backups" is not a remote restic repository.*a local path would be on the droplet, lost with it/);
  rejects('repository = "sftp:backup@vault:/srv/convex"', /hosts\.dev\.backup\.password_env: required with a repository/);
  rejects('password_env = "P"', /hosts\.dev\.backup\.password_env: only means something with backup\.repository/);
  rejects('repository = "sftp:vault:/srv/convex"\npassword_env = "P"', /is not an SFTP repository with a user, a host and an absolute path/);
  rejects('repository = "sftp:backup@vault:srv"\npassword_env = "P"', /is not an SFTP repository/);
  rejects('repository = "sftp:backup@vault:/srv/../etc"\npassword_env = "P"', /must be an absolute path below \//);
  rejects('repository = "rest:https://u:secret@host/"\npassword_env = "P"', /must not contain a password/);
  rejects('repository = "sftp:backup@vault:/srv/convex"\npassword_env = "MY-PW"', /"MY-PW" is not an environment variable name/);
  rejects('repository = "sftp:backup@vault:/srv/convex"\npassword_env = "P"\nkeep_daily = 0\nkeep_weekly = 0\nkeep_monthly = 0', /keep_daily, keep_weekly and keep_monthly are all 0/);
  rejects('repository = "sftp:backup@vault:/srv/convex"\npassword_env = "P"\nkeep_weekly = -1', /hosts\.dev\.backup\.keep_weekly: must be 0 or more/);
  rejects('repository = "s3:host/bucket"\npassword_env = "P"\nrepository_host = "vault"', /repository_host: the tool prepares SFTP targets only/);
  rejects('repository = "sftp:backup@vault:/srv/convex"\npassword_env = "P"\nrepository_host = "vualt"', /repository_host: "vualt" is not a host\. Known hosts: dev, vault/);
  rejects('repository = "sftp:backup@vault:/srv/convex"\npassword_env = "P"\nrepository_host = "dev"', /a host cannot keep its off-host copies on itself/);
  rejects('repositry = "sftp:backup@vault:/srv/convex"', /hosts\.dev\.backup\.repositry: unknown key\. Did you mean "repository"\?/);
});

const sftpHost = offsiteHost;
const PINNED = 'ssh-ed25519 AAAAvaultkey';

test('the password travels as a quoted sh assignment on stdin, never on a command line', () => {
  const env = { TEST_RESTIC_PW: `it's "$(rm -rf /)"` };
  const text = secretsText(sftpHost.backup.offsite!, env);
  assert.match(text, /^RESTIC_PASSWORD='it'\\''s "\$\(rm -rf \/\)"'$/m);
  process.env.TEST_RESTIC_PW = 'pw-on-stdin-only';
  try {
    const [, , copy] = offsiteBackup({ pinned: PINNED }).phases[0]!.plan({ script: file(renderBackupScript(sftpHost), '755'), knownHosts: absent } as never, sftpHost);
    assert.equal(copy!.script, '/usr/local/sbin/convex-ops-backup offsite -');
    assert.match(copy!.stdin!, /^RESTIC_PASSWORD=pw-on-stdin-only$/m);
    assert.ok(!renderBackupScript(sftpHost).includes('pw-on-stdin-only'), 'the password is not in the script');
  } finally {
    delete process.env.TEST_RESTIC_PW;
  }
  assert.equal(
    sftpCommand(sftpHost.backup.offsite),
    'ssh -i /root/.ssh/convex-ops-backup_ed25519 -o IdentitiesOnly=yes -o UserKnownHostsFile=/etc/convex-ops/backup_known_hosts -o StrictHostKeyChecking=yes -o BatchMode=yes -o ConnectTimeout=20 -o ServerAliveInterval=30 -p 22 convex-backup@vault.test -s sftp',
  );
});

test('the droplet: restic and ssh installed, its own key made on it once; then the backup, the copy, the check', () => {
  assert.deepEqual(labels(planOffsiteClient({ packages: packages(), publicKey: absent }, sftpHost)), [
    'install restic, openssh-client',
    "make the droplet's own ed25519 key for the backup target (/root/.ssh/convex-ops-backup_ed25519)",
  ]);
  assert.deepEqual(planOffsiteClient({ packages: packages('restic', 'openssh-client'), publicKey: file('ssh-ed25519 AAAAdev convex-ops-backup@dev\n', '644') }, sftpHost), []);
  const steps = offsiteBackup({ pinned: PINNED, verify: true }).phases[0]!;
  const changes = steps.plan({ script: file(renderBackupScript(sftpHost), '755'), knownHosts: absent } as never, sftpHost);
  assert.deepEqual(labels(changes), [
    'create /etc/convex-ops/backup_known_hosts (vault.test)',
    'make a backup in /opt/convex/backups/<id>, then keep the newest 3',
    'copy the backup and .env to sftp:convex-backup@vault.test:/srv/convex, then forget --prune (keep daily 7, weekly 4, monthly 6)',
    'check sftp:convex-backup@vault.test:/srv/convex (restic check, reading 10% of the data)',
  ]);
  assert.match(changes[0]!.stdin!, /^vault\.test ssh-ed25519 AAAAvaultkey$/m);
});

test('a target that is not an inventory host must already be pinned on the droplet', () => {
  const byHand: Host = { ...sftpHost, backup: { keep: 3, offsite: { ...sftpHost.backup.offsite!, repository_host: undefined } } };
  assert.throws(() => knownHostsChanges(absent, byHand, undefined), /the backup target's host key is not pinned: .* has no line for vault\.test\. .*Nothing was changed\./);
  assert.deepEqual(knownHostsChanges(file('vault.test ssh-ed25519 AAAA\n'), byHand, undefined), []);
});

test('the target: user, .ssh, the repository folder, the key restricted to SFTP; converged, nothing; other keys kept', () => {
  const sftp = sftpHost.backup.offsite!.sftp!;
  const clients = [{ name: 'dev', publicKey: 'ssh-ed25519 AAAAdev' }];
  const none = { user: undefined, sshDir: undefined, repository: undefined, authorizedKeys: absent };
  assert.deepEqual(labels(planBackupTarget(none, sftp, clients)), [
    'create the user convex-backup (SFTP only, no shell)',
    '/home/convex-backup/.ssh (mode 700, convex-backup)',
    'the repository folder /srv/convex (mode 700, convex-backup)',
    'create /home/convex-backup/.ssh/authorized_keys (convex-ops-backup@dev, SFTP only)',
  ]);
  const content = authorizedKeys(absent, clients);
  assert.match(content, /^restrict,command="internal-sftp" ssh-ed25519 AAAAdev convex-ops-backup@dev$/m);
  const converged = { user: { home: '/home/convex-backup' }, sshDir: 'convex-backup 700', repository: 'convex-backup 700', authorizedKeys: file(content, '600', 'convex-backup') };
  assert.deepEqual(planBackupTarget(converged, sftp, clients), []);
  // A second droplet adds its line; a new key of dev replaces dev's line; a hand-written line stays.
  const mixed = authorizedKeys(file(`${content}ssh-ed25519 AAAAhand someone@laptop\n`, '600', 'convex-backup'), [{ name: 'dev', publicKey: 'ssh-ed25519 AAAAnew' }, { name: 'prod', publicKey: 'ssh-ed25519 AAAAprod' }]);
  assert.deepEqual(mixed.split('\n').filter(l => !l.startsWith('#') && l), [
    'ssh-ed25519 AAAAhand someone@laptop',
    'restrict,command="internal-sftp" ssh-ed25519 AAAAnew convex-ops-backup@dev',
    'restrict,command="internal-sftp" ssh-ed25519 AAAAprod convex-ops-backup@prod',
  ]);
  assert.throws(() => planBackupTarget({ ...converged, user: { home: '/var/backup' } }, sftp, clients), /the user convex-backup exists with the home folder \/var\/backup/);
});

test('the scheduled job: its password file root-only with a masked diff, the host key pinned; without a repository the file goes', () => {
  process.env.TEST_RESTIC_PW = 'scheduled-pw';
  try {
    const facts = { script: file(renderBackupScript(sftpHost), '755'), init: 'other', packages: packages('cron'), cron: absent, service: absent, timer: absent, timerState: '', pending: [], secrets: absent, knownHosts: absent } as ScheduleFacts;
    const changes = planBackupSchedule(facts, sftpHost, PINNED);
    assert.deepEqual(labels(changes), [
      'create /etc/convex-ops/backup_known_hosts (vault.test)',
      'create /etc/convex-ops/restic.env (the repository password, root only)',
      'create /etc/cron.d/convex-ops-backup',
    ]);
    assert.match(changes[1]!.script!, /chmod 600/);
    assert.ok(!changes[1]!.diff!.includes('scheduled-pw'), 'the diff masks the password');
    assert.deepEqual(labels(planBackupSchedule({ ...facts, script: file(renderBackupScript(testHost), '755'), secrets: file('RESTIC_PASSWORD=old\n', '600') }, testHost)), ['remove /etc/convex-ops/restic.env (no repository is set)', 'create /etc/cron.d/convex-ops-backup']);
  } finally {
    delete process.env.TEST_RESTIC_PW;
  }
});

test("restic's output: the snapshot made and how many retention forgot; the list with times and sizes", () => {
  const stdout = [
    'INITIALIZED',
    'SNAPSHOTS [{"time":"2026-12-02T03:17:05.123Z","hostname":"dev","paths":["/mnt/v/backups/20261202T031700Z","/mnt/v/.env"],"tags":["convex-ops","instance:swarm-dev","backup:20261202T031700Z"],"id":"abcdef0123","short_id":"abcdef01"}]',
    'FORGET [{"host":"dev","keep":[{}],"remove":[{},{}]}]',
  ].join('\n');
  const memo = new HostMemo();
  assert.deepEqual(parseOffsiteCopy(stdout), { snapshot: 'abcdef01', forgotten: 2, initialized: true });
  const { after } = offsiteBackup({}).phases[0]!.plan({ script: file(renderBackupScript(sftpHost), '755'), knownHosts: file('vault.test k\n') } as never, sftpHost)[1]!;
  assert.equal(after!(stdout, memo), 'created the repository sftp:convex-backup@vault.test:/srv/convex; snapshot abcdef01 in sftp:convex-backup@vault.test:/srv/convex; forgot 2 by retention (keep daily 7, weekly 4, monthly 6)');
  assert.deepEqual(memo.get(OFFSITE_COPY), { snapshot: 'abcdef01', forgotten: 2, initialized: true });
  assert.throws(() => parseOffsiteCopy('SNAPSHOTS []\n'), /finished without naming its snapshot/);

  const listed = parseSnapshots(`${stdout.split('\n')[1]}\nSIZE abcdef01 {"total_size":3145728,"total_file_count":4}\n`);
  assert.equal(describeSnapshot(listed[0]!, b => `${b / 1048576} MiB`), 'abcdef01 2026-12-02T03:17:05Z dev backup 20261202T031700Z (3 MiB)');
  assert.deepEqual(parseSnapshots('SNAPSHOTS []\n'), []);
});
