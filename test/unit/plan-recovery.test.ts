// The recovery drill's plans (restore.ts --from-repository): the snapshot fetched with the
// password on stdin, its .env put in place before the install, another instance refused
// without --force-replace. Facts in, changes out: no host.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Change } from '../../scripts/lib/plan.ts';
import { HostMemo } from '../../scripts/lib/step.ts';
import { renderBackupScript } from '../../scripts/lib/steps/backup.ts';
import { FETCHED_BACKUP, fetchSnapshot, planRecoveredEnv, snapshotUsageProblem } from '../../scripts/lib/steps/recovery.ts';
import { absent, file, offsiteHost } from './fixtures.ts';

const labels = (changes: Change[]) => changes.map(c => c.label);
const host = offsiteHost;
const env = (secret: string) => file(`INSTANCE_SECRET=${secret}\nPOSTGRES_PASSWORD=pw\n`, '600');

test('--snapshot: an id or latest, checked before anything connects', () => {
  assert.equal(snapshotUsageProblem('latest'), undefined);
  assert.equal(snapshotUsageProblem('4f3a9c1d'), undefined);
  assert.match(snapshotUsageProblem('yesterday')!, /--snapshot "yesterday" is neither a restic snapshot id .* nor latest/);
  assert.match(snapshotUsageProblem('')!, /--snapshot needs a value/);
});

test('fetch: the host key pinned, then the snapshot fetched with the password on stdin; it records the backup it holds', () => {
  process.env.TEST_RESTIC_PW = 'drill-pw';
  try {
    const changes = fetchSnapshot('latest', 'ssh-ed25519 AAAAvault').phases[0]!.plan({ script: file(renderBackupScript(host), '755'), knownHosts: absent } as never, host);
    assert.deepEqual(labels(changes), [
      'create /etc/convex-ops/backup_known_hosts (vault.test)',
      'fetch the newest snapshot of swarm-dev from sftp:convex-backup@vault.test:/srv/convex and verify it',
    ]);
    const fetch = changes[1]!;
    assert.equal(fetch.script, '/usr/local/sbin/convex-ops-backup fetch - latest');
    assert.match(fetch.stdin!, /^RESTIC_PASSWORD=drill-pw$/m);
    const memo = new HostMemo();
    assert.equal(fetch.after!('convex-ops-backup: …\nFETCHED 20261202T031700Z\n', memo), 'fetched the newest snapshot of swarm-dev from sftp:convex-backup@vault.test:/srv/convex: backup 20261202T031700Z (verified) in /opt/convex/backups/20261202T031700Z, its .env in /var/lib/convex-ops/snapshot.env');
    assert.equal(memo.get(FETCHED_BACKUP), '20261202T031700Z');
    assert.throws(() => fetch.after!('nothing\n', new HostMemo()), /finished without naming the backup it fetched/);
    // Then, read after the fetch, its .env put in place (the plan below).
    const env = fetchSnapshot('latest', undefined).phases[1]!.plan({ fetched: file('INSTANCE_SECRET=s\n', '600'), current: absent } as never, host);
    assert.deepEqual(labels(env), ['create .env from the snapshot (its INSTANCE_SECRET and database credentials)', 'remove /var/lib/convex-ops/snapshot.env']);
  } finally {
    delete process.env.TEST_RESTIC_PW;
  }
});

test(".env: the snapshot's on a fresh droplet; the same instance, nothing to write; another instance refused, or kept aside with --force-replace", () => {
  const now = new Date('2026-12-02T10:00:00Z');
  const fresh = planRecoveredEnv({ fetched: env('old-secret-0123456789'), current: absent }, host, false, now);
  assert.deepEqual(labels(fresh), ['create .env from the snapshot (its INSTANCE_SECRET and database credentials)', 'remove /var/lib/convex-ops/snapshot.env']);
  assert.match(fresh[0]!.stdin!, /^INSTANCE_SECRET=old-secret-0123456789$/m);
  assert.ok(!fresh[0]!.diff!.includes('old-secret-0123456789'), 'the diff masks the secret');

  assert.throws(() => planRecoveredEnv({ fetched: env('old-secret-0123456789'), current: env('other-secret-987654321') }, host, false, now), /dev already runs another instance .*Add --force-replace .*Nothing was changed\./);
  const replaced = planRecoveredEnv({ fetched: env('old-secret-0123456789'), current: env('other-secret-987654321') }, host, true, now);
  assert.equal(replaced[0]!.label, "keep the other instance's .env as /opt/convex/.env.before-recovery-20261202T100000Z");
  assert.throws(() => planRecoveredEnv({ fetched: absent, current: absent }, host, false, now), /snapshot\.env is missing/);
});
