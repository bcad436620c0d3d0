// Real droplets (issue 13): Debian 13 booting systemd, as cloud images do. On two fresh droplets of
// that flavour, with domains and `firewall = true`: all.ts converges both and a second run changes
// nothing; the services are enabled, not only started; a backup and restore round trip; a reboot
// (`docker restart`: systemd shuts down and boots again) with nobody running anything brings the
// backend back over HTTPS within 60 s with its data, the firewall and the timers, and no drift;
// a promotion whose candidate fails on prod is rolled back. Every product action is a script run
// as an operator runs it; fleet.exec is only for assertions and for the fragile marker file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import https from 'node:https';
import { useFleet } from '../fleet/index.ts';
import { portOpen } from '../fleet/droplets.ts';
import { waitFor } from '../fleet/proc.ts';
import { adminKeyOf, parseRunJson } from './convex-api.ts';

const fleet = await useFleet({
  name: 'trixie',
  droplets: [
    { name: 'dev', user: 'root', domains: true, flavour: 'debian13-systemd' },
    { name: 'prod', user: 'deploy', domains: true, promoteFrom: 'dev', flavour: 'debian13-systemd' },
  ],
});
const inventory = await fleet.writeInventory('firewalled', { defaults: { firewall: true } });
const ca = await fs.readFile(fleet.acmeCaPath!, 'utf8');

const HOSTS = ['dev', 'prod'] as const;
type HostName = (typeof HOSTS)[number];
const output = (run: { stdout: string; stderr: string }) => `${run.stdout}\n${run.stderr}`;
const sh = async (droplet: HostName, cmd: string) => (await fleet.exec(droplet, cmd)).stdout.trim();
const image = (repo: 'backend' | 'dashboard', tag: string) => `registry.test:5000/convex-${repo}:${tag}`;
const script = (name: string, args: string[]) => fleet.runScript(name, ['--inventory', inventory, ...args]);

/** A request to the droplet's api name over HTTPS, from outside, trusting pebble's CA only. */
function api(droplet: HostName, method: string, path: string, key?: string, body?: unknown): Promise<{ status: number; body: string }> {
  const servername = `api.${droplet}.test`;
  return new Promise((resolve, reject) => {
    const request = https.request(
      { host: fleet.droplets[droplet]!.ip, port: 443, servername, method, path, ca, timeout: 10_000, headers: { Host: servername, 'Content-Type': 'application/json', ...(key ? { Authorization: `Convex ${key}` } : {}) } },
      response => {
        let text = '';
        response.on('data', (chunk: Buffer) => (text += chunk.toString()));
        response.on('end', () => resolve({ status: response.statusCode ?? 0, body: text }));
      },
    );
    request.on('timeout', () => request.destroy(new Error(`${method} https://${servername}${path} timed out`)));
    request.on('error', reject);
    request.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

/** From outside, only SSH, HTTP and HTTPS connect: the Convex ports and PostgreSQL do not. */
async function assertFirewalled(droplet: HostName): Promise<void> {
  const ip = fleet.droplets[droplet]!.ip;
  for (const port of [22, 80, 443]) assert.ok(await portOpen(ip, port, 3000), `${droplet}: port ${port} should connect`);
  for (const port of [3210, 3211, 6791, 5432]) assert.ok(!(await portOpen(ip, port, 3000)), `${droplet}: port ${port} should not connect from outside`);
}

/** Units that must come back at boot: enabled, and running now. */
async function assertEnabledAndActive(droplet: HostName, units: string[]): Promise<void> {
  for (const unit of units) {
    assert.match(await sh(droplet, `systemctl is-enabled ${unit} || true`), /^(enabled|enabled-runtime|static|alias)$/, `${droplet}: ${unit} is not enabled`);
    assert.equal(await sh(droplet, `systemctl is-active ${unit} || true`), 'active', `${droplet}: ${unit} is not active`);
  }
}

const keys: Partial<Record<HostName, string>> = {};

test('all.ts converges two fresh Debian 13 systemd droplets with domains and the firewall; a second run changes nothing', async () => {
  assert.equal(await sh('dev', 'cat /proc/1/comm'), 'systemd');
  assert.match(await sh('dev', '. /etc/os-release && echo "$VERSION_ID"'), /^13/);
  const first = await script('all.ts', ['--host', 'all']);
  assert.equal(first.code, 0, output(first));
  for (const host of HOSTS) {
    assert.match(first.stdout, new RegExp(`${host}\\s+docker\\s+changed\\s.*install docker\\.io, docker-cli`), 'the engine and Debian 13\'s separate CLI');
    assert.match(first.stdout, new RegExp(`${host}\\s+postgres\\s+changed\\s.*create postgresql@\\.service drop-in \\(start after Docker\\)`));
    assert.match(first.stdout, new RegExp(`${host}\\s+firewall\\s+changed`));
    keys[host] = await adminKeyOf(fleet, host);
  }

  const second = await script('all.ts', ['--host', 'all', '--json']);
  assert.equal(second.code, 0, output(second));
  for (const run of parseRunJson(second.stdout).hosts) {
    assert.equal(run.recap.changed, 0, `${run.host} changed on a second run:\n${run.steps.filter(s => s.status !== 'ok').map(s => `${s.step} ${s.status} ${s.detail}`).join('\n')}`);
    assert.equal(run.recap.failed, 0);
  }

  for (const host of HOSTS) {
    const version = await sh(host, "ls /etc/postgresql | sort -V | tail -n 1");
    assert.equal(version, '17', 'Debian 13 ships PostgreSQL 17');
    await assertEnabledAndActive(host, ['docker.service', `postgresql@${version}-main.service`, 'nginx.service', 'certbot.timer']);
    // `ufw enable` loads the rules now and ufw.service loads them at boot: it is enabled, and
    // runs (as a oneshot) only from the next boot on.
    assert.equal(await sh(host, 'systemctl is-enabled ufw.service || true'), 'enabled');
    assert.match(await sh(host, 'ufw status'), /^Status: active/);
    assert.match(await sh(host, 'docker compose version'), /Docker Compose version v?2\./);
    assert.match(await sh(host, 'nginx -v 2>&1'), /nginx\/1\.2[6-9]/);
    await assertFirewalled(host);
    assert.equal((await api(host, 'GET', '/version')).status, 200);
  }
});

test('backup.ts --schedule enables a systemd timer; backup, delete, restore brings the document back', async () => {
  const key = keys.prod!;
  assert.equal((await api('prod', 'PUT', '/api/documents/precious', key, { keep: 'me' })).status, 200);
  const schedule = await script('backup.ts', ['--host', 'prod', '--schedule']);
  assert.equal(schedule.code, 0, output(schedule));
  assert.match(schedule.stdout, /prod\s+backup-schedule\s+changed\s.*enable and start convex-ops-backup\.timer/);
  await assertEnabledAndActive('prod', ['convex-ops-backup.timer']);

  const backup = await script('backup.ts', ['--host', 'prod']);
  assert.equal(backup.code, 0, output(backup));
  const id = /prod\s+backup\s+changed.*backup (\d{8}T\d{6}Z) \(/.exec(backup.stdout)?.[1];
  assert.ok(id, output(backup));
  assert.equal((await api('prod', 'DELETE', '/api/documents/precious', key)).status, 200);
  assert.equal((await api('prod', 'GET', '/api/documents/precious', key)).status, 404);

  const restore = await script('restore.ts', ['--host', 'prod', '--backup', id, '--yes']);
  assert.equal(restore.code, 0, output(restore));
  assert.match(restore.stdout, /prod\s+check backend-healthy\s+ok/);
  assert.deepEqual(JSON.parse((await api('prod', 'GET', '/api/documents/precious', key)).body), { keep: 'me' });
});

test('a reboot with nobody running anything: HTTPS back within 60 s, data, firewall and timers intact, no drift', async () => {
  const key = keys.dev!;
  assert.equal((await api('dev', 'PUT', '/api/documents/survivor', key, { before: 'reboot' })).status, 200);
  const backupTimer = await script('backup.ts', ['--host', 'dev', '--schedule']);
  assert.equal(backupTimer.code, 0, output(backupTimer));

  const started = Date.now();
  await fleet.reboot('dev');
  await waitFor('the backend to answer over HTTPS after the reboot', 60_000 - (Date.now() - started), async () => {
    const version = await api('dev', 'GET', '/version').catch(() => undefined);
    return version?.status === 200 ? true : undefined;
  });
  const seconds = (Date.now() - started) / 1000;
  process.stderr.write(`# dev answered over HTTPS ${seconds.toFixed(1)} s after the reboot began\n`);

  assert.deepEqual(JSON.parse((await api('dev', 'GET', '/api/documents/survivor', key)).body), { before: 'reboot' });
  assert.match(await sh('dev', 'ufw status'), /^Status: active/);
  await assertFirewalled('dev');
  await assertEnabledAndActive('dev', ['certbot.timer', 'convex-ops-backup.timer']);
  const version = await sh('dev', "ls /etc/postgresql | sort -V | tail -n 1");
  assert.match(await sh('dev', 'ss -Hltn'), /172\.17\.0\.1:5432/, 'PostgreSQL listens on the Docker bridge after the boot');
  assert.equal(await sh('dev', `systemctl show -p After --value postgresql@${version}-main | tr ' ' '\\n' | grep -x docker.service`), 'docker.service');

  const check = await script('all.ts', ['--host', 'dev', '--check']);
  assert.equal(check.code, 0, `all.ts --check found drift after the reboot:\n${output(check)}`);
});

test('a promotion whose candidate fails on prod is rolled back to the images prod ran before', async () => {
  const marker = '/mnt/convex_prod/data/FAIL_HERE'; // the fragile stand-in's /convex/data/FAIL_HERE
  const before = await sh('prod', "docker inspect --format '{{.Config.Image}} {{.Image}}' convex-backend");
  await fleet.exec('prod', `touch ${marker}`);
  try {
    const run = await script('all.ts', ['--promote', 'dev:prod', '--yes', '--backend-image', image('backend', 'fragile-v1')]);
    assert.equal(run.code, 1, output(run));
    assert.match(run.stdout, /dev\s+check backend-healthy\s+ok/, 'fragile should pass on dev');
    assert.match(run.stdout, /PROMOTION dev → prod: rolled-back/);
    assert.match(run.stdout, /prod after rollback: (\d+)\/\1 ok/);
  } finally {
    await fleet.exec('prod', `rm -f ${marker}`);
  }
  assert.equal(await sh('prod', "docker inspect --format '{{.Config.Image}} {{.Image}}' convex-backend"), before, 'prod runs the very image it ran before');
  assert.equal((await api('prod', 'GET', '/version')).body, 'v1');
  assert.deepEqual(JSON.parse((await api('prod', 'GET', '/api/documents/precious', keys.prod)).body), { keep: 'me' });
});
