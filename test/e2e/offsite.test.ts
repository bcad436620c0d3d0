// Off-host backups with restic (issue 16): the target is another droplet ("vault"), prepared by
// the tool and reached over real SFTP through its real sshd. A manual and a scheduled off-host
// backup, retention, restic check, the list, a wrong password (a clear error, the local backup
// kept), and no secret in the output, the run log or any process list on either droplet.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { useFleet } from '../fleet/index.ts';
import { adminKeyOf, backendUrl, putDocument } from './convex-api.ts';

const fleet = await useFleet({ name: 'offsite', droplets: [{ name: 'solo' }, { name: 'vault' }] });

const PASSWORD = 'restic-pw-Zq8#x "quoted" $HOME';
const env = { OFFSITE_RESTIC_PASSWORD: PASSWORD };
const BACKUPS = '/mnt/convex_solo/backups';
const offsite = (extra: Record<string, unknown> = {}) => ({
  hosts: { solo: { backup: { repository: 'sftp:convex-backup@vault.test:/srv/convex', password_env: 'OFFSITE_RESTIC_PASSWORD', repository_host: 'vault', ...extra } } },
});
const sh = async (droplet: string, cmd: string, env?: Record<string, string>) => (await fleet.exec(droplet, cmd, { env })).stdout.trim();
const output = (run: { stdout: string; stderr: string }) => `${run.stdout}\n${run.stderr}`;
const localBackups = async () => (await sh('solo', `ls ${BACKUPS}`)).split('\n').filter(Boolean);
/** The snapshots in the repository, read with restic over SFTP from solo (the vault has no restic). */
const sftp = 'ssh -i /root/.ssh/convex-ops-backup_ed25519 -o UserKnownHostsFile=/etc/convex-ops/backup_known_hosts -o BatchMode=yes convex-backup@vault.test -s sftp';
const restic = `restic -r sftp:convex-backup@vault.test:/srv/convex -o sftp.command='${sftp}'`;
const snapshots = async () => {
  const out = await sh('solo', `${restic} snapshots --json`, { RESTIC_PASSWORD: PASSWORD });
  return JSON.parse(out) as Array<{ short_id: string; tags: string[]; hostname: string; paths: string[] }>;
};

/**
 * Runs a script while sampling every process's command line and environment-free arguments on
 * both droplets (ps, every 50 ms), and returns the run and what ps saw.
 */
async function withProcessSampling(run: () => Promise<{ code: number; stdout: string; stderr: string }>) {
  const sampler = `rm -f /tmp/ps.log; while [ ! -e /tmp/ps.stop ]; do ps -eo args >>/tmp/ps.log; sleep 0.05; done; rm -f /tmp/ps.stop`;
  const samplers = ['solo', 'vault'].map(d => fleet.exec(d, `rm -f /tmp/ps.stop; ${sampler}`));
  const result = await run();
  await Promise.all(['solo', 'vault'].map(d => fleet.exec(d, 'touch /tmp/ps.stop')));
  await Promise.all(samplers);
  const seen = (await Promise.all(['solo', 'vault'].map(d => sh(d, 'cat /tmp/ps.log')))).join('\n');
  return { result, seen };
}

let instanceSecret = '';

test('backup.ts copies the backup and .env off-host: the vault prepared, the key made on the droplet, the host key pinned, no secret anywhere', async () => {
  const install = await fleet.runScript('all.ts', ['--host', 'solo']);
  assert.equal(install.code, 0, output(install));
  const key = await adminKeyOf(fleet, 'solo');
  assert.equal(await putDocument(backendUrl(fleet, 'solo'), key, 'precious', { keep: 'me' }), 200);
  instanceSecret = await sh('solo', "sed -n 's/^INSTANCE_SECRET=//p' /opt/convex/.env");
  assert.ok(instanceSecret.length >= 32);

  const inventory = await fleet.writeInventory('offsite', offsite());
  const { result: run, seen } = await withProcessSampling(() => fleet.runScript('backup.ts', ['--host', 'solo', '--inventory', inventory], env));
  assert.equal(run.code, 0, output(run));
  assert.match(run.stdout, /vault\s+backup-target\s+changed.*create the user convex-backup.*authorized_keys/);
  assert.match(run.stdout, /solo\s+backup\s+changed.*backup \d{8}T\d{6}Z .*created the repository sftp:convex-backup@vault\.test:\/srv\/convex; snapshot [0-9a-f]{8}/);

  // The key was made on solo and only its public half is on the vault, restricted to SFTP.
  const publicKey = (await sh('solo', 'cat /root/.ssh/convex-ops-backup_ed25519.pub')).split(' ').slice(0, 2).join(' ');
  assert.equal(await sh('solo', 'stat -c %a /root/.ssh/convex-ops-backup_ed25519'), '600');
  assert.equal(await sh('vault', `grep -c -- ${JSON.stringify(publicKey)} /home/convex-backup/.ssh/authorized_keys`), '1');
  assert.match(await sh('vault', 'cat /home/convex-backup/.ssh/authorized_keys'), /^restrict,command="internal-sftp" ssh-ed25519 \S+ convex-ops-backup@solo$/m);
  assert.equal(await sh('vault', 'ls /root/.ssh 2>/dev/null | grep -c convex-ops || true'), '0');
  // SFTP only: the key runs no command on the vault.
  const shell = await fleet.exec('solo', 'ssh -i /root/.ssh/convex-ops-backup_ed25519 -o UserKnownHostsFile=/etc/convex-ops/backup_known_hosts -o BatchMode=yes convex-backup@vault.test id', { allowFail: true });
  assert.doesNotMatch(shell.stdout, /uid=/);
  // The vault's host key is pinned on solo.
  const vaultKey = (await sh('vault', 'cat /etc/ssh/ssh_host_ed25519_key.pub')).split(' ').slice(0, 2).join(' ');
  assert.match(await sh('solo', 'cat /etc/convex-ops/backup_known_hosts'), new RegExp(`^vault\\.test ${vaultKey.replace(/[+/]/g, '\\$&')}$`, 'm'));

  // The snapshot holds the backup and .env, tagged, and is encrypted at rest.
  const [snapshot] = await snapshots();
  assert.equal(snapshot!.hostname, 'solo');
  assert.ok(snapshot!.tags.includes('instance:convex-self-hosted'));
  const [local] = await localBackups();
  assert.ok(snapshot!.tags.includes(`backup:${local}`));
  assert.ok(snapshot!.paths.some(p => p.endsWith('/.env')));
  assert.equal(await sh('vault', `grep -rl ${instanceSecret} /srv/convex | wc -l`), '0');
  assert.equal(await sh('vault', 'stat -c "%U %a" /srv/convex'), 'convex-backup 700');

  // No secret in the output, the run log, or any command line on either droplet.
  const log = await readFile(join(fleet.dir, '.convex-ops', 'convex-ops.log'), 'utf8');
  for (const secret of [PASSWORD, instanceSecret]) {
    assert.ok(!output(run).includes(secret), 'a secret in the output');
    assert.ok(!log.includes(secret), 'a secret in the run log');
    assert.ok(!seen.includes(secret), 'a secret in a process list');
  }
  assert.match(seen, /restic/, 'the sampler saw restic run');
});

test('a second backup prepares nothing again; --list shows local and off-host snapshots with times and sizes; --verify checks', async () => {
  const inventory = await fleet.writeInventory('offsite', offsite());
  // A dry run lists the backup and the copy, and makes neither.
  const [locals, copies] = [await localBackups(), await snapshots()];
  const dry = await fleet.runScript('backup.ts', ['--host', 'solo', '--inventory', inventory, '--check'], env);
  assert.equal(dry.code, 2, output(dry));
  assert.match(dry.stdout, /solo\s+backup\s+changed\s+[\d.]+s\s+would: make a backup .*; copy the backup and \.env to sftp:convex-backup@vault\.test:\/srv\/convex/);
  assert.deepEqual([await localBackups(), await snapshots()], [locals, copies]);

  const run = await fleet.runScript('backup.ts', ['--host', 'solo', '--inventory', inventory, '--verify'], env);
  assert.equal(run.code, 0, output(run));
  assert.match(run.stdout, /vault\s+backup-target\s+ok/);
  assert.match(run.stdout, /solo\s+offsite-client\s+ok/);
  assert.match(run.stdout, /checked sftp:convex-backup@vault\.test:\/srv\/convex: no errors/);
  // keep_daily keeps one snapshot a day, the newest: today's first one is forgotten.
  assert.match(run.stdout, /forgot 1 by retention \(keep daily 7, weekly 4, monthly 6\)/);
  const left = await snapshots();
  assert.equal(left.length, 1);
  assert.ok(left[0]!.tags.includes(`backup:${(await localBackups()).pop()}`), 'the newest snapshot is the one kept');

  const list = await fleet.runScript('backup.ts', ['--host', 'solo', '--inventory', inventory, '--list'], env);
  assert.equal(list.code, 0, output(list));
  assert.match(list.stdout, /solo\s+backups\s+ok\s.*2 good backup\(s\).*\d{8}T\d{6}Z \(\d+(\.\d)? [KM]iB\)/);
  assert.match(list.stdout, /solo\s+offsite-snapshots\s+ok\s.*1 snapshot\(s\) in sftp:convex-backup@vault\.test:\/srv\/convex: [0-9a-f]{8} \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ solo backup \d{8}T\d{6}Z \(\d+(\.\d)? [KM]iB\)/);
  assert.doesNotMatch(list.stdout, /vault\s/, 'the list prepares nothing');
});

test('retention keeps exactly what it promises: keep_daily 2 and keep_monthly 2 over snapshots of today, 3, 10 and 40 days ago', async () => {
  // Older snapshots of this host and instance, made with restic's --time as the job would have made them.
  const day = 24 * 3600 * 1000;
  const old = [3, 10, 40].map(days => ({ days, time: new Date(Date.now() - days * day).toISOString().replace('T', ' ').replace(/\..*/, '') }));
  for (const { days, time } of old) {
    await sh('solo', `${restic} backup --host solo --tag convex-ops --tag instance:convex-self-hosted --tag backup:old-${days} --time '${time}' /etc/hostname`, { RESTIC_PASSWORD: PASSWORD });
  }
  const inventory = await fleet.writeInventory('retention', offsite({ keep_daily: 2, keep_weekly: 0, keep_monthly: 2 }));
  const run = await fleet.runScript('backup.ts', ['--host', 'solo', '--inventory', inventory], env);
  assert.equal(run.code, 0, output(run));
  // restic's documented policy: the newest snapshot of each of the 2 newest days, and of each of
  // the 2 newest months (which of the old ones that is depends on today's date).
  const newest = (await localBackups()).pop();
  const made = [{ tag: `backup:${newest}`, days: 0 }, ...old.map(o => ({ tag: `backup:old-${o.days}`, days: o.days }))];
  const newestOf = (bucket: (d: Date) => string, n: number) => {
    const seen = new Map<string, string>();
    for (const { tag, days } of made) {
      const key = bucket(new Date(Date.now() - days * day));
      if (!seen.has(key)) seen.set(key, tag);
    }
    return [...seen.values()].slice(0, n);
  };
  const expected = [...new Set([...newestOf(d => d.toISOString().slice(0, 10), 2), ...newestOf(d => d.toISOString().slice(0, 7), 2)])].sort();
  const kept = (await snapshots()).map(s => s.tags.find(t => t.startsWith('backup:'))).sort();
  assert.deepEqual(kept, expected);
  // Five snapshots before the forget: the one test 2 kept, the three old ones, the new one.
  assert.match(run.stdout, new RegExp(`forgot ${5 - expected.length} by retention \\(keep daily 2, weekly 0, monthly 2\\)`));
});

test('a wrong password or an unreachable target: a clear error, and the local backup is made and kept', async () => {
  const inventory = await fleet.writeInventory('offsite', offsite());
  const before = await localBackups();
  const wrong = await fleet.runScript('backup.ts', ['--host', 'solo', '--inventory', inventory], { OFFSITE_RESTIC_PASSWORD: 'not the password' });
  assert.equal(wrong.code, 1, output(wrong));
  assert.match(wrong.stdout, /solo\s+backup\s+failed.*cannot open the restic repository sftp:convex-backup@vault\.test:\/srv\/convex: .*wrong password/s);
  const after = await localBackups();
  assert.equal(after.length, Math.min(before.length + 1, 7), 'the local backup was made and kept');

  const unreachable = await fleet.writeInventory('unreachable', {
    hosts: { solo: { backup: { repository: 'sftp:convex-backup@nowhere.test:/srv/convex', password_env: 'OFFSITE_RESTIC_PASSWORD' } } },
  });
  await fleet.exec('solo', "echo 'nowhere.test ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl' >>/etc/convex-ops/backup_known_hosts");
  const lost = await fleet.runScript('backup.ts', ['--host', 'solo', '--inventory', unreachable], env);
  assert.equal(lost.code, 1, output(lost));
  assert.match(lost.stdout, /solo\s+backup\s+failed.*cannot open the restic repository sftp:convex-backup@nowhere\.test:\/srv\/convex/s);
  assert.equal((await localBackups()).length, Math.min(after.length + 1, 7));
});

test('--schedule: the job copies off-host too, its password in a root-only file', async () => {
  const inventory = await fleet.writeInventory('offsite', offsite());
  const run = await fleet.runScript('backup.ts', ['--host', 'solo', '--inventory', inventory, '--schedule'], env);
  assert.equal(run.code, 0, output(run));
  assert.ok(!output(run).includes(PASSWORD));
  assert.equal(await sh('solo', 'stat -c "%a %U %G" /etc/convex-ops/restic.env'), '600 root root');
  const again = await fleet.runScript('backup.ts', ['--host', 'solo', '--inventory', inventory, '--schedule'], env);
  assert.match(again.stdout, /solo\s+ok=\d+\s+changed=0\s+failed=0/, output(again));

  const line = /root (.*)$/m.exec(await sh('solo', 'cat /etc/cron.d/convex-ops-backup'))![1]!;
  await fleet.exec('solo', `env -i PATH=/usr/bin:/bin sh -c '${line}'`);
  const newest = (await localBackups()).pop();
  assert.ok((await snapshots()).some(s => s.tags.includes(`backup:${newest}`)), 'the job copied its backup off-host');
  const log = await sh('solo', 'cat /var/log/convex-ops-backup.log');
  assert.match(log, /^SNAPSHOTS /m);
  assert.match(log, /^CHECKED$/m);
  assert.ok(!log.includes(PASSWORD));
});
