// The firewall of a host without domains (issue 14, part 3), on one fresh droplet where ufw
// cannot be installed, so the iptables path is the one at work: all.ts runs the firewall step
// although the host has no [domains]; from the test host only SSH then connects, the published
// ports 3210, 3211 and 6791 included (they move to 127.0.0.1, reached through an SSH tunnel);
// that holds after a Docker restart and a boot; and a run whose SSH probe fails leaves no boot
// hook behind, so the next boot does not lock the operator out.
//
// fleet.exec() is used for assertions and preconditions only (apt that cannot offer ufw, a
// listener on 80, a NAT in front of sshd, and what a boot does: rules gone, cron's @reboot
// lines run); every change of the product's is made by its scripts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import http from 'node:http';
import { useFleet } from '../fleet/index.ts';
import type { Fleet } from '../fleet/index.ts';
import { portOpen } from '../fleet/droplets.ts';
import { sshBehindNat } from './ssh-nat.ts';

const DROPLET = 'bare';
const BOOT_HOOK = '/etc/cron.d/convex-ops-firewall';
const BACKEND_PORTS = [3210, 3211, 6791];

const fleet: Fleet = await useFleet({ name: 'firewalltest', droplets: [{ name: DROPLET }] });
const ip = fleet.droplets[DROPLET]!.ip;
const firewalled = await fleet.writeInventory('firewalled', { hosts: { [DROPLET]: { firewall: true } } });

interface JsonRun { code: number; recap: { changed: number }; steps: Array<{ step: string; status: string; detail: string; changes: string[] }>; stderr: string }

async function run(script: string, inventory: string): Promise<JsonRun> {
  const result = await fleet.runScript(script, ['--host', DROPLET, '--json', '--inventory', inventory]);
  try {
    const [hostRun] = (JSON.parse(result.stdout) as { hosts: Array<Omit<JsonRun, 'code' | 'stderr'>> }).hosts;
    return { code: result.code, stderr: result.stderr, ...hostRun! };
  } catch {
    throw new Error(`${script} printed no JSON (exit ${result.code}):\n${result.stdout}\n${result.stderr}`);
  }
}

const describe = (r: JsonRun) => r.steps.map(s => `${s.step} ${s.status} ${s.detail} ${s.changes.join('; ')}`).join('\n');
const sh = async (command: string) => (await fleet.exec(DROPLET, command)).stdout;
const tcpOpen = (port: number) => portOpen(ip, port, 3000);

/** What answers from the test host, among SSH, 80, 443 and the backend's ports. */
async function reachable(): Promise<number[]> {
  const ports = [22, 80, 443, ...BACKEND_PORTS];
  const open = await Promise.all(ports.map(tcpOpen));
  return ports.filter((_, i) => open[i]);
}

/** The rules are applied (and proven by a new SSH connection) before the boot hook is created. */
function assertHookedAfterApplying(changes: string[]): void {
  const applied = changes.indexOf('apply the iptables firewall');
  assert.ok(applied >= 0, changes.join('\n'));
  assert.ok(applied < changes.indexOf(`create ${BOOT_HOOK}`), changes.join('\n'));
}

/** A boot as far as the firewall goes: the kernel's rules are gone, then cron runs its @reboot lines. */
async function boot(): Promise<void> {
  await fleet.exec(DROPLET, 'iptables -D INPUT -j convex-ops-input 2>/dev/null; iptables -F convex-ops-input 2>/dev/null; iptables -X convex-ops-input 2>/dev/null; true');
  await fleet.exec(DROPLET, `[ ! -f ${BOOT_HOOK} ] || sed -n 's/^@reboot root //p' ${BOOT_HOOK} | sh -e`);
}

/** GET /version through `ssh -L`, as the firewall step tells the operator to reach the backend. */
async function versionThroughTunnel(): Promise<string> {
  const localPort = 20000 + Math.floor(Math.random() * 20000);
  const tunnel = spawn('ssh', ['-N', '-i', fleet.identityPath, '-o', `UserKnownHostsFile=${fleet.knownHostsPath}`, '-o', 'StrictHostKeyChecking=yes', '-o', 'ExitOnForwardFailure=yes', '-L', `${localPort}:127.0.0.1:3210`, `root@${ip}`], { stdio: 'ignore' });
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        return await new Promise<string>((resolve, reject) => {
          http.get({ host: '127.0.0.1', port: localPort, path: '/version', timeout: 5000 }, response => {
            let body = '';
            response.on('data', (chunk: Buffer) => (body += chunk));
            response.on('end', () => resolve(body));
          }).on('error', reject);
        });
      } catch (error) {
        if (attempt >= 20) throw error;
        await new Promise(resolve => setTimeout(resolve, 500));
      }
    }
  } finally {
    tunnel.kill();
  }
}

test('precondition: apt cannot offer ufw here, and something listens on port 80', async () => {
  await fleet.exec(DROPLET, 'printf "Package: ufw\\nPin: release *\\nPin-Priority: -1\\n" > /etc/apt/preferences.d/no-ufw');
  await fleet.exec(DROPLET, `setsid nohup perl -MIO::Socket::INET -e '$s = IO::Socket::INET->new(LocalPort => 80, Listen => 5, ReuseAddr => 1) or die; while ($c = $s->accept) { close $c }' >/dev/null 2>&1 &`);
});

test('without the firewall, the backend ports answer from outside: the probes below can see an open port', { timeout: 60 * 60_000 }, async () => {
  const install = await run('all.ts', fleet.inventoryPath);
  assert.equal(install.code, 0, describe(install));
  assert.ok(!install.steps.some(s => s.step === 'firewall'), 'no firewall step with firewall = false');
  assert.deepEqual(await reachable(), [22, 80, ...BACKEND_PORTS]);
});

test('firewall = true without domains: all.ts runs the firewall; only SSH answers from outside, the backend through a tunnel', { timeout: 30 * 60_000 }, async () => {
  const first = await run('all.ts', firewalled);
  assert.equal(first.code, 0, describe(first));
  const compose = first.steps.find(s => s.step === 'compose')!;
  assert.equal(compose.status, 'changed', 'the ports move to loopback');
  const firewall = first.steps.find(s => s.step === 'firewall')!;
  assert.equal(firewall.status, 'changed', describe(first));
  assertHookedAfterApplying(firewall.changes);
  const tunnel = /no \[domains\]: ports 3210, 3211 and 6791 are published on 127\.0\.0\.1 only .* ssh -N -L 3210:127\.0\.0\.1:3210 -L 3211:127\.0\.0\.1:3211 -L 6791:127\.0\.0\.1:6791 root@/;
  assert.match(first.stderr, new RegExp(`warning: ${tunnel.source}`), 'the run that closes the ports says how to reach them');
  assert.equal(first.steps.find(s => s.step === 'check backend-ports-local')?.status, 'ok', describe(first));

  assert.deepEqual(await reachable(), [22], 'only SSH: 80 and the published ports are closed');
  assert.match(await versionThroughTunnel(), /\S/, 'the backend answers through an SSH tunnel');
  // The backend still reaches PostgreSQL on the Docker bridge.
  assert.equal(first.steps.find(s => s.step === 'check backend-healthy')?.status, 'ok');

  const again = await run('all.ts', firewalled);
  assert.equal(again.code, 0, describe(again));
  assert.equal(again.recap.changed, 0, describe(again));
  const converged = again.steps.find(s => s.step === 'firewall')!.detail;
  assert.match(converged, /iptables \(chain convex-ops-input\) allows 22\/tcp(, 5432\/tcp from [\d./]+)+; other incoming connections are dropped/);
  assert.match(converged, tunnel);
  assert.doesNotMatch(again.stderr, new RegExp(`warning: ${tunnel.source}`), 'a converged run does not repeat it as a warning');
});

test('the ports stay closed after a Docker restart and after a boot', { timeout: 10 * 60_000 }, async () => {
  await fleet.exec(DROPLET, 'service docker restart');
  await fleet.exec(DROPLET, 'for i in $(seq 1 120); do curl -sf http://127.0.0.1:3210/version >/dev/null && exit 0; sleep 1; done; exit 1');
  assert.deepEqual(await reachable(), [22]);

  await boot();
  assert.match(await sh('iptables -S INPUT'), /-A INPUT -j convex-ops-input/, 'the boot hook put the firewall back');
  assert.deepEqual(await reachable(), [22]);
  const after = await run('firewall.ts', firewalled);
  assert.equal(after.recap.changed, 0, describe(after));
});

test('iptables: a run whose SSH probe fails turns the firewall off and takes it out of the boot', { timeout: 30 * 60_000 }, async () => {
  // Behind a NAT from 2222 to sshd's 22: the rules accept 2222, the packets arrive as 22.
  const nat = await sshBehindNat(fleet, DROPLET, 2222);
  const natted = await fleet.writeInventory('natted', { hosts: { [DROPLET]: { port: 2222, known_hosts: nat.knownHostsPath, firewall: true } } });
  try {
    const locked = await run('firewall.ts', natted);
    assert.equal(locked.code, 1, describe(locked));
    const step = locked.steps.find(s => s.step === 'firewall')!;
    assert.match(step.detail, /a new SSH connection to [\d.]+:2222 failed .*so the firewall was turned off again/);
    assert.doesNotMatch(await sh('iptables -S INPUT'), /convex-ops-input/);
    assert.equal((await sh(`ls ${BOOT_HOOK} 2>/dev/null || true`)).trim(), '', 'the boot hook of the earlier good run is gone too');

    await boot();
    assert.doesNotMatch(await sh('iptables -S INPUT'), /convex-ops-input/, 'the boot puts no firewall back');
    assert.equal(await tcpOpen(22), true, 'SSH still answers after the boot');
  } finally {
    await nat.remove();
  }

  // The next good run applies and proves the firewall again, then hooks it into the boot.
  const fixed = await run('firewall.ts', firewalled);
  assert.equal(fixed.code, 0, describe(fixed));
  assertHookedAfterApplying(fixed.steps.find(s => s.step === 'firewall')!.changes);
  await boot();
  assert.deepEqual(await reachable(), [22]);
});
