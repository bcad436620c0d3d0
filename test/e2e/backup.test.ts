// backup.ts and restore.ts end to end (issue 5): a verified backup (pg_dump -Fc, a tar of data and
// storage, SHA256SUMS); a document deleted after it comes back with restore.ts; a damaged backup
// and a failed backup change nothing and count for nothing; rotation keeps N; --schedule installs
// a daily job that runs the same script. Every product action is a script run as an operator
// runs it; fleet.exec is only for assertions and preconditions.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { useFleet } from '../fleet/index.ts';
import { adminKeyOf, backendUrl, getDocument, putDocument } from './convex-api.ts';

const fleet = await useFleet({ name: 'backups', droplets: [{ name: 'solo', user: 'deploy' }] });

const BACKUPS = '/mnt/convex_solo/backups';
const sh = async (cmd: string) => (await fleet.exec('solo', cmd)).stdout.trim();
const goodBackups = async () => (await sh(`ls ${BACKUPS}`)).split('\n').filter(Boolean);
const startedAt = () => sh("docker inspect --format '{{.Name}} {{.Id}} {{.State.StartedAt}}' convex-backend convex-dashboard");
const output = (run: { stdout: string; stderr: string }) => `${run.stdout}\n${run.stderr}`;
const backupId = (stdout: string) => {
  const id = /solo\s+backup\s+changed.*backup (\d{8}T\d{6}Z) \(/.exec(stdout)?.[1];
  assert.ok(id, `no backup id in:\n${stdout}`);
  return id;
};

let key = '';
let url = '';

test('backup.ts makes a verified backup: dump, archive, manifest and checksums', async () => {
  const install = await fleet.runScript('all.ts', ['--host', 'solo']);
  assert.equal(install.code, 0, output(install));
  key = await adminKeyOf(fleet, 'solo');
  url = backendUrl(fleet, 'solo');
  assert.equal(await putDocument(url, key, 'precious', { keep: 'me' }), 200);

  const run = await fleet.runScript('backup.ts', ['--host', 'solo']);
  assert.equal(run.code, 0, output(run));
  const id = backupId(run.stdout);
  assert.match(run.stdout, /solo\s+ok=\d+\s+changed=1\s+failed=0/);
  assert.deepEqual(await goodBackups(), [id]);
  assert.equal(await sh(`ls ${BACKUPS}/${id} | tr '\\n' ' '`), 'SHA256SUMS data.tar.gz database.dump manifest');
  assert.equal(await sh(`stat -c '%a %U' ${BACKUPS}/${id}`), '700 root');
  assert.equal(await sh(`cd ${BACKUPS}/${id} && sha256sum --quiet -c SHA256SUMS && echo good`), 'good');
  assert.match(await sh(`pg_restore --list ${BACKUPS}/${id}/database.dump`), /TABLE public documents convex/);
  assert.match(await sh(`tar -tzf ${BACKUPS}/${id}/data.tar.gz`), /^data\/storage\/precious\.json$/m);
  assert.match(await sh(`cat ${BACKUPS}/${id}/manifest`), /^database=convex_self_hosted$/m);

  const list = await fleet.runScript('backup.ts', ['--host', 'solo', '--list']);
  assert.match(list.stdout, new RegExp(`solo\\s+backups\\s+ok.*1 good backup\\(s\\).*${id}`));
});

test('restore.ts refuses without --backup or --yes, and changes nothing', async () => {
  const before = await startedAt();
  const [id] = await goodBackups();
  for (const [args, expect] of [
    [['--backup', id!], /Add --yes to go ahead/],
    [['--yes'], /--backup ID is required/],
    [['--backup', 'yesterday', '--yes'], /is not a backup id/],
  ] as const) {
    const run = await fleet.runScript('restore.ts', ['--host', 'solo', ...args]);
    assert.equal(run.code, 1, output(run));
    assert.match(run.stderr, expect);
    assert.doesNotMatch(run.stdout, /connect/);
  }
  const unknown = await fleet.runScript('restore.ts', ['--host', 'solo', '--backup', '20000101T000000Z', '--yes']);
  assert.equal(unknown.code, 1, output(unknown));
  assert.match(unknown.stdout, new RegExp(`no good backup 20000101T000000Z .*good backups: ${id}.*Nothing was changed`));
  assert.equal(await startedAt(), before);
});

test('backup, then delete the document, then restore: it is back', async () => {
  const [id] = await goodBackups();
  assert.equal((await fetch(`${url}/api/documents/precious`, { method: 'DELETE', headers: { Authorization: `Convex ${key}` } })).status, 200);
  assert.equal((await getDocument(url, key, 'precious')).status, 404);
  assert.equal(await putDocument(url, key, 'written-after', { lost: 'by the restore' }), 200);

  const run = await fleet.runScript('restore.ts', ['--host', 'solo', '--backup', id!, '--yes']);
  assert.equal(run.code, 0, output(run));
  assert.match(run.stdout, /solo\s+restore\s+changed.*stop the backend.*restore database convex_self_hosted.*start the backend/);
  assert.match(run.stdout, /solo\s+check backend-healthy\s+ok/);
  assert.match(run.stdout, /solo\s+check database\s+ok/);
  assert.deepEqual((await getDocument(url, key, 'precious')).body, { keep: 'me' });
  assert.equal((await getDocument(url, key, 'written-after')).status, 404);
  assert.equal(await sh('cat /mnt/convex_solo/data/storage/precious.json'), '{"keep":"me"}');
  assert.equal(await sh('ls -A /mnt/convex_solo | grep convex-ops || true'), '', 'a staging or aside folder was left behind');
  // Ownership: the tables are the backend role's again, so it can keep writing.
  assert.equal(await sh(`runuser -u postgres -- psql -XAt -d convex_self_hosted -c "select distinct tableowner from pg_tables where schemaname = 'public'"`), 'convex');
  assert.equal(await putDocument(url, key, 'after-restore', { ok: true }), 200);
});

test('a damaged backup is refused before anything stops', async () => {
  const run = await fleet.runScript('backup.ts', ['--host', 'solo']);
  assert.equal(run.code, 0, output(run));
  const id = backupId(run.stdout);
  await fleet.exec('solo', `echo garbage >> ${BACKUPS}/${id}/data.tar.gz`);
  const before = await startedAt();
  const restore = await fleet.runScript('restore.ts', ['--host', 'solo', '--backup', id, '--yes']);
  assert.equal(restore.code, 1, output(restore));
  assert.match(restore.stdout, /does not match its SHA256SUMS: it is damaged\. Nothing was changed\./);
  assert.equal(await startedAt(), before);
  assert.deepEqual((await getDocument(url, key, 'after-restore')).body, { ok: true });
  await fleet.exec('solo', `rm -rf ${BACKUPS}/${id}`);
});

test('a failed backup is removed, never counted, and deletes nothing', async () => {
  const before = await goodBackups();
  const inventory = await fleet.writeInventory('keep1', { hosts: { solo: { backup: { keep: 1 } } } });
  await fleet.exec('solo', 'service postgresql stop >/dev/null');
  try {
    const run = await fleet.runScript('backup.ts', ['--host', 'solo', '--inventory', inventory]);
    assert.equal(run.code, 1, output(run));
    assert.match(run.stdout, /solo\s+backup\s+failed/);
    assert.deepEqual(await goodBackups(), before, 'a failed backup changed the list of good backups');
    assert.equal(await sh(`ls -A ${BACKUPS} | grep -c partial || true`), '0');
  } finally {
    await fleet.exec('solo', 'service postgresql start >/dev/null');
  }
});

test('rotation keeps the newest N backups', async () => {
  const inventory = await fleet.writeInventory('keep2', { hosts: { solo: { backup: { keep: 2 } } } });
  const made: string[] = [];
  for (let i = 0; i < 3; i++) {
    const run = await fleet.runScript('backup.ts', ['--host', 'solo', '--inventory', inventory]);
    assert.equal(run.code, 0, output(run));
    made.push(backupId(run.stdout));
  }
  assert.deepEqual(await goodBackups(), made.slice(-2));
});

test('--schedule installs a daily job that runs the same script', async () => {
  const inventory = await fleet.writeInventory('keep2', { hosts: { solo: { backup: { keep: 2 } } } });
  const run = await fleet.runScript('backup.ts', ['--host', 'solo', '--schedule', '--inventory', inventory]);
  assert.equal(run.code, 0, output(run));
  // The fleet's droplets do not run systemd as PID 1, so this is the cron variant.
  const cron = await sh('cat /etc/cron.d/convex-ops-backup');
  assert.match(cron, /^\d+ \d+ \* \* \* root \/usr\/local\/sbin\/convex-ops-backup scheduled >>\/var\/log\/convex-ops-backup\.log 2>&1$/m);
  assert.equal(await sh('stat -c "%a %U" /etc/cron.d/convex-ops-backup'), '644 root');
  assert.equal(await sh('pgrep -x cron >/dev/null && echo running'), 'running');
  const again = await fleet.runScript('backup.ts', ['--host', 'solo', '--schedule', '--inventory', inventory]);
  assert.match(again.stdout, /solo\s+ok=\d+\s+changed=0\s+failed=0/, output(again));

  // What cron runs, run the way cron runs it (root, its PATH): a good backup, rotated to 2.
  const newest = (await goodBackups()).pop()!;
  // A backup's id is the UTC second it starts in: wait until the droplet's clock has left newest's.
  await fleet.exec('solo', `for i in $(seq 50); do [ "$(date -u +%Y%m%d%H%M%S)" -gt ${newest.replace(/\D/g, '')} ] && exit 0; sleep 0.1; done; exit 1`);
  const line = /root (.*)$/m.exec(cron)![1]!;
  await fleet.exec('solo', `env -i PATH=/usr/bin:/bin sh -c '${line}'`);
  const after = await goodBackups();
  assert.equal(after.length, 2);
  assert.equal(after[0], newest);
  assert.match(await sh('tail -n 3 /var/log/convex-ops-backup.log'), /^BACKUP \d{8}T\d{6}Z \d+$/m);
});
