// The disaster recovery drill (issue 16): documents written on dev, dev backed up off-host to the
// vault droplet over SFTP, dev's container and volume destroyed, then a fresh droplet rebuilt
// from the repository with restore.ts --from-repository: the old admin key reads the documents
// back, all.ts --check finds nothing to do, and no secret appears in the output, the run log or
// a process list on the droplets while it runs. The recovery time is measured and printed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { useFleet } from '../fleet/index.ts';
import { adminKeyOf, backendUrl, getDocument, putDocument } from './convex-api.ts';
import { destroyDroplet, vaultBackup } from './drill.ts';

const fleet = await useFleet({ name: 'recovery', droplets: [{ name: 'dev' }, { name: 'vault' }, { name: 'fresh' }] });

const PASSWORD = 'drill-pw "x" $PATH ok';
const env = { DRILL_RESTIC_PASSWORD: PASSWORD };
const backup = vaultBackup('DRILL_RESTIC_PASSWORD');
const output = (run: { stdout: string; stderr: string }) => `${run.stdout}\n${run.stderr}`;
const sh = async (droplet: string, cmd: string) => (await fleet.exec(droplet, cmd)).stdout.trim();

/** Samples every command line on these droplets (ps, every 50 ms) while `run` runs. */
async function sampled<T>(droplets: string[], run: () => Promise<T>): Promise<{ result: T; seen: string }> {
  const loop = 'rm -f /tmp/ps.log /tmp/ps.stop; while [ ! -e /tmp/ps.stop ]; do ps -eo args >>/tmp/ps.log; sleep 0.05; done';
  const samplers = droplets.map(d => fleet.exec(d, loop));
  const result = await run();
  await Promise.all(droplets.map(d => fleet.exec(d, 'touch /tmp/ps.stop')));
  await Promise.all(samplers);
  const seen = (await Promise.all(droplets.map(d => sh(d, 'cat /tmp/ps.log')))).join('\n');
  return { result, seen };
}

test('a destroyed droplet is rebuilt from the off-host repository on a fresh one: same admin key, same data', async () => {
  const inventory = await fleet.writeInventory('drill', { hosts: { dev: { backup }, fresh: { backup } } });
  const install = await fleet.runScript('all.ts', ['--host', 'dev', '--inventory', inventory]);
  assert.equal(install.code, 0, output(install));
  const key = await adminKeyOf(fleet, 'dev');
  for (let i = 0; i < 20; i++) assert.equal(await putDocument(backendUrl(fleet, 'dev'), key, `doc-${i}`, { n: i, text: 'x'.repeat(1000) }), 200);
  const secret = await sh('dev', "sed -n 's/^INSTANCE_SECRET=//p' /opt/convex/.env");

  const copy = await fleet.runScript('backup.ts', ['--host', 'dev', '--inventory', inventory], env);
  assert.equal(copy.code, 0, output(copy));
  assert.match(copy.stdout, /dev\s+backup\s+changed.*snapshot [0-9a-f]{8} in sftp:convex-backup@vault\.test:\/srv\/convex/);

  // The disaster: dev's container and its data volume are gone, with every local backup.
  await destroyDroplet(fleet, 'dev');

  // A dry run changes nothing on the fresh droplet, and says what it would do.
  const dry = await fleet.runScript('restore.ts', ['--host', 'fresh', '--inventory', inventory, '--from-repository', '--check'], env);
  assert.equal(dry.code, 2, output(dry));
  assert.match(dry.stdout, /fresh\s+fetch-snapshot\s+changed\s+[\d.]+s\s+would: .*fetch the newest snapshot of convex-self-hosted/);
  assert.equal(await sh('fresh', 'ls -A /opt/convex /root/.ssh/convex-ops-backup_ed25519 2>/dev/null | wc -l; command -v restic || true'), '0');

  const started = Date.now();
  const { result: restore, seen } = await sampled(['fresh', 'vault'], () =>
    fleet.runScript('restore.ts', ['--host', 'fresh', '--inventory', inventory, '--from-repository', '--yes'], env),
  );
  const seconds = (Date.now() - started) / 1000;
  assert.equal(restore.code, 0, output(restore));
  process.stderr.write(`[recovery] bare droplet to a serving, restored backend: ${seconds.toFixed(0)} s\n`);
  assert.match(restore.stdout, /fresh\s+fetch-snapshot\s+changed.*fetched the newest snapshot of convex-self-hosted .*backup \d{8}T\d{6}Z \(verified\)/);
  assert.match(restore.stdout, /fresh\s+fetch-snapshot\s+changed.*create \.env from the snapshot .*remove \/var\/lib\/convex-ops\/snapshot\.env/);
  assert.match(restore.stdout, /fresh\s+restore\s+changed.*restore database convex_self_hosted/);
  assert.match(restore.stdout, /fresh\s+check backend-healthy\s+ok/);

  // The old admin key works on the new droplet, and the documents are there.
  for (const i of [0, 7, 19]) assert.deepEqual((await getDocument(backendUrl(fleet, 'fresh'), key, `doc-${i}`)).body, { n: i, text: 'x'.repeat(1000) });
  assert.equal(await sh('fresh', "sed -n 's/^INSTANCE_SECRET=//p' /opt/convex/.env"), secret);
  assert.equal(await sh('fresh', 'ls /var/lib/convex-ops/snapshot.env 2>/dev/null | wc -l'), '0', 'the fetched copy of .env is gone');

  const check = await fleet.runScript('all.ts', ['--host', 'fresh', '--inventory', inventory, '--check']);
  assert.equal(check.code, 0, output(check));

  // No secret in the output, the run log, or a command line on the droplets during the restore.
  const log = await readFile(join(fleet.dir, '.convex-ops', 'convex-ops.log'), 'utf8');
  for (const value of [PASSWORD, secret, key]) {
    assert.ok(!output(restore).includes(value), 'a secret in the output');
    assert.ok(!log.includes(value), 'a secret in the run log');
    assert.ok(!seen.includes(value), 'a secret in a process list');
  }
  assert.match(seen, /restic/, 'the sampler saw restic run');
});

test('a droplet running another instance is refused without --force-replace, and keeps running', async () => {
  const inventory = await fleet.writeInventory('other', { hosts: { fresh: { backup } } });
  // fresh now runs the restored instance; give its .env another secret, as another instance would have.
  await fleet.exec('fresh', "sed -i 's/^INSTANCE_SECRET=.*/INSTANCE_SECRET=0000000000000000000000000000000000000000000000000000000000000000/' /opt/convex/.env");
  const before = await sh('fresh', "docker inspect --format '{{.State.StartedAt}}' convex-backend");
  const unset = await fleet.runScript('restore.ts', ['--host', 'fresh', '--inventory', inventory, '--from-repository', '--yes']);
  assert.equal(unset.code, 1, output(unset));
  assert.match(unset.stderr, /hosts\.fresh\.backup\.password_env: the environment variable DRILL_RESTIC_PASSWORD is not set/);
  assert.doesNotMatch(unset.stdout, /connect/);
  const run = await fleet.runScript('restore.ts', ['--host', 'fresh', '--inventory', inventory, '--from-repository', '--yes'], env);
  assert.equal(run.code, 1, output(run));
  assert.match(run.stdout, /fresh\s+fetch-snapshot\s+failed.*already runs another instance .*Add --force-replace to replace it\. Nothing was changed\./s);
  assert.equal(await sh('fresh', 'ls -A /var/lib/convex-ops/snapshot.env /mnt/convex_fresh/.convex-ops-fetch 2>/dev/null | wc -l'), '0', 'nothing fetched was left');
  assert.equal(await sh('fresh', "docker inspect --format '{{.State.StartedAt}}' convex-backend"), before);
  assert.match(await sh('fresh', 'cat /opt/convex/.env'), /^INSTANCE_SECRET=0{64}$/m);
});

test('a snapshot that does not exist, or a damaged repository, is refused and changes nothing', async () => {
  const inventory = await fleet.writeInventory('other', { hosts: { fresh: { backup } } });
  const state = () => sh('fresh', "sha256sum /opt/convex/.env; docker inspect --format '{{.State.StartedAt}}' convex-backend; ls -A /mnt/convex_fresh /opt/convex/backups");
  const before = await state();
  const unknown = await fleet.runScript('restore.ts', ['--host', 'fresh', '--inventory', inventory, '--from-repository', '--snapshot', 'deadbeef', '--force-replace', '--yes'], env);
  assert.equal(unknown.code, 1, output(unknown));
  assert.match(unknown.stdout, /fresh\s+fetch-snapshot\s+failed.*cannot restore snapshot deadbeef from sftp:convex-backup@vault\.test:\/srv\/convex/s);
  // Every pack of the repository damaged in its middle: restic's authentication refuses the data.
  await fleet.exec('vault', "for f in $(find /srv/convex/data -type f); do printf 'damage!!' | dd of=\"$f\" bs=1 seek=64 conv=notrunc status=none; done");
  const damaged = await fleet.runScript('restore.ts', ['--host', 'fresh', '--inventory', inventory, '--from-repository', '--force-replace', '--yes'], env);
  assert.equal(damaged.code, 1, output(damaged));
  assert.match(damaged.stdout, /fresh\s+fetch-snapshot\s+failed.*cannot restore snapshot latest from sftp:convex-backup@vault\.test:\/srv\/convex/s);
  assert.doesNotMatch(damaged.stdout, /fresh\s+(docker|postgres|restore)\s/, 'nothing after the fetch ran');
  assert.equal(await state(), before);
});
