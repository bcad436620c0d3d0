// The firewall step's plan: the tool chosen from facts (so a dry run and a real run choose alike),
// ufw's rules, the iptables script proven by a new SSH connection before it is hooked into the
// boot, and the tunnel hint for a host without domains.
import { test, mock } from 'node:test';
import assert from 'node:assert/strict';
import type { Host } from '../../scripts/lib/inventory.ts';
import type { Change } from '../../scripts/lib/plan.ts';
import type { Fact } from '../../scripts/lib/step.ts';
import { SkipStep } from '../../scripts/lib/step.ts';
import { Connection } from '../../scripts/lib/ssh.ts';
import type { RunResult } from '../../scripts/lib/ssh.ts';
import type { Reporter } from '../../scripts/lib/report.ts';
import { HostSession } from '../../scripts/lib/session.ts';
import { sha256 } from '../../scripts/lib/files.ts';
import type { DockerNetworks } from '../../scripts/lib/steps/docker.ts';
import { firewall, firewallTool, planAptLists, planFirewall, planFirewallPackages, renderIptablesScript, openings, ufwAvailability, ufwState, tunnelHint } from '../../scripts/lib/steps/firewall.ts';
import type { FirewallFacts, UfwAvailability } from '../../scripts/lib/steps/firewall.ts';
import { absent, file, packages, testHost } from './fixtures.ts';

const labels = (changes: Change[]) => changes.map(c => c.label);
const host: Host = { ...testHost, firewall: true };
const networks: DockerNetworks = { subnets: ['172.17.0.0/16'], convexNetwork: true, bridgeGateway: '172.17.0.1' };
const noUfw = { installed: false, active: false, rules: [] };

const facts = (over: Partial<FirewallFacts> = {}): FirewallFacts => ({
  init: 'systemd', ufw: 'offered', ufwState: noUfw, networks, iptables: { applied: '', hooked: false }, script: absent, unit: absent, cron: absent, ...over,
});

test('the tool: ufw when installed or offered, iptables when apt does not offer it; without lists the lists come first', () => {
  assert.equal(firewallTool('installed'), 'ufw');
  assert.equal(firewallTool('offered'), 'ufw');
  assert.equal(firewallTool('not offered'), 'iptables');
  assert.throws(() => firewallTool('no lists'), /apt has no package lists even after apt-get update/);
  assert.deepEqual(labels(planAptLists({ ufw: 'no lists', networks }, host)), ["refresh apt's package lists (there are none yet, and they tell whether ufw can be installed)"]);
  assert.deepEqual(planAptLists({ ufw: 'not offered', networks }, host), []);
  assert.deepEqual(labels(planFirewallPackages({ packages: packages(), init: 'systemd', ufw: 'offered' })), ['install ufw']);
  assert.deepEqual(labels(planFirewallPackages({ packages: packages(), init: 'other', ufw: 'not offered' })), ['install iptables, cron']);
  assert.deepEqual(planFirewallPackages({ packages: packages('ufw'), init: 'systemd', ufw: 'installed' }), []);
  assert.equal(ufwAvailability.parse('not offered\n', 0), 'not offered');
  assert.equal(ufwAvailability.parse('no lists\n', 0), 'no lists');
});

test('refusals and skips: firewall = false; a local PostgreSQL without Docker networks', () => {
  assert.throws(() => planAptLists({ ufw: 'offered', networks }, testHost), (e: Error) => e instanceof SkipStep && /firewall is false/.test(e.message));
  assert.throws(() => planAptLists({ ufw: 'offered', networks: { ...networks, subnets: [] } }, host), /the Docker networks were not found.*nothing was changed/);
});

test('ufw fresh: the rules, SSH first, then deny and enable, as one change proven by a new SSH connection; converged: nothing', () => {
  const [change, ...rest] = planFirewall(facts(), host);
  assert.deepEqual(rest, []);
  assert.equal(change!.label, 'ufw: allow 22/tcp; allow from 172.17.0.0/16 to any port 5432 proto tcp; default deny incoming; --force enable');
  assert.equal(change!.sshProbe!.undo, 'ufw --force disable; ufw default deny incoming');
  assert.match(change!.sshProbe!.failure('timed out'), /a new SSH connection to 10\.0\.0\.1:22 failed \(timed out\), so the firewall was turned off again/);
  const wanted = ['allow 22/tcp', 'allow from 172.17.0.0/16 to any port 5432 proto tcp'];
  assert.deepEqual(planFirewall(facts({ ufw: 'installed', ufwState: { installed: true, active: true, defaultInput: 'DROP', rules: wanted } }), host), []);
  const added = planFirewall(facts({ ufw: 'installed', ufwState: { installed: true, active: true, defaultInput: 'DROP', rules: wanted.slice(0, 1) } }), host);
  assert.deepEqual(labels(added), ['ufw: allow from 172.17.0.0/16 to any port 5432 proto tcp']);
  assert.equal(added[0]!.sshProbe, undefined, 'an allow alone cannot lock anyone out');
});

test('iptables fresh: script, apply (proven, then recorded), and only then the boot hook; converged: nothing', () => {
  const systemd = planFirewall(facts({ ufw: 'not offered' }), host);
  assert.deepEqual(labels(systemd), [
    'create the iptables firewall script',
    'apply the iptables firewall',
    'create /etc/systemd/system/convex-ops-firewall.service',
    'enable convex-ops-firewall.service at boot',
  ]);
  const script = renderIptablesScript(host, openings(host, networks.subnets), '/etc/systemd/system/convex-ops-firewall.service');
  assert.match(systemd[1]!.sshProbe!.proven!, new RegExp(`echo ${sha256(script)} > /var/lib/convex-ops/firewall-applied`));
  assert.match(systemd[1]!.sshProbe!.undo, /systemctl disable convex-ops-firewall\.service/);
  const cron = planFirewall(facts({ ufw: 'not offered', init: 'other' }), host);
  assert.deepEqual(labels(cron), ['create the iptables firewall script', 'apply the iptables firewall', 'create /etc/cron.d/convex-ops-firewall']);

  const unit = systemd[2]!.stdin!;
  const convergedFacts = facts({ ufw: 'not offered', iptables: { applied: sha256(script), hooked: true }, script: file(script, '755'), unit: file(unit) });
  assert.deepEqual(planFirewall(convergedFacts, host), []);
  assert.deepEqual(labels(planFirewall({ ...convergedFacts, iptables: { applied: sha256(script), hooked: false } }, host)), ['apply the iptables firewall'], 'rules gone (a boot without the hook): applied again');
  const older = '#!/bin/sh\n# Managed by convex-ops\nold\n';
  assert.deepEqual(labels(planFirewall({ ...convergedFacts, script: file(older, '755') }, host)), ['update the iptables firewall script'], 'a hand edit of the file: the applied rules are already the wanted ones');
  assert.deepEqual(labels(planFirewall({ ...convergedFacts, script: file(older, '755'), iptables: { applied: sha256(older), hooked: true } }, host)), ['update the iptables firewall script', 'apply the iptables firewall'], 'other openings: written and applied');
});

test('without domains: the tunnel hint is a warning when the step changes something, and part of the summary when converged', () => {
  const [, , rules] = firewall.phases!;
  const fresh = facts({ ufw: 'not offered' });
  const warnings = rules!.warnings!(fresh as never, host);
  assert.deepEqual(warnings, [`${host.name}: ufw cannot be installed from apt here; the firewall is made with plain iptables`, tunnelHint(host)]);
  const wanted = ['allow 22/tcp', 'allow from 172.17.0.0/16 to any port 5432 proto tcp'];
  const done = facts({ ufw: 'installed', ufwState: { installed: true, active: true, defaultInput: 'DROP', rules: wanted } });
  assert.deepEqual(rules!.warnings!(done as never, host), []);
  assert.equal(rules!.ok!(done as never, host), `ufw allows 22/tcp, 5432/tcp from 172.17.0.0/16; other incoming connections are denied; ${tunnelHint(host)}`);
  assert.deepEqual(rules!.warnings!(done as never, { ...host, domains: { api: 'a.test', site: 's.test', dashboard: 'd.test' } }), []);
});

/**
 * A host answering from `state`: each fact's command gets the answer set for that fact (none:
 * empty output), and every other command succeeds; `onChange` may change the state a script makes.
 */
function fakeHost(state: Map<string, string>, onChange: (script: string) => void = () => {}) {
  const scripts: string[] = [];
  const conn = {
    host,
    commands: 0,
    async run(script: string): Promise<RunResult> {
      if (!script.startsWith('d=$(mktemp -d)')) {
        scripts.push(script);
        onChange(script);
        return { code: 0, stdout: '', stderr: '' };
      }
      let stdout = '';
      for (const [, i, command] of script.matchAll(/'@@convex-ops-fact-begin (\d+)'; \( ([\s\S]*?)\n\) 2>\/dev\/null; printf/g)) {
        stdout += `@@convex-ops-fact-begin ${i}\n${state.get(command!) ?? ''}\n@@convex-ops-fact-end ${i} 0\n`;
      }
      return { code: 0, stdout, stderr: '' };
    },
  };
  return { conn: conn as unknown as Connection, scripts };
}

const quiet = { stepStarted() {}, stepFinished() {}, progress() {}, warn() {} } as unknown as Reporter;

async function runFirewall(check: boolean, ufw: UfwAvailability, refreshed: UfwAvailability): Promise<{ changes: string[]; scripts: string[] }> {
  const state = new Map<string, string>([[ufwAvailability.command, ufw]]);
  const answer = <T>(fact: Fact<T>, out: string) => state.set(fact.command, out);
  answer(ufwState, '');
  // After apt-get update, apt answers from the new lists.
  const { conn, scripts } = fakeHost(state, script => script.includes('apt_get update') && answer(ufwAvailability, refreshed));
  const session = new HostSession({ ...host, postgres: { mode: 'external', user: 'convex' } }, { dryRun: check, acceptNew: false, lockTimeout: 1, script: 'firewall', reporter: quiet });
  session.conn = conn;
  assert.ok(await session.run([firewall]) || check, JSON.stringify(session.results));
  return { changes: session.results.find(r => r.step === 'firewall')!.changes, scripts };
}

test('dry run and real run choose the same tool from the same facts (the SSH probe stands in)', async () => {
  const probe = mock.method(Connection, 'open', async () => ({ close() {} }));
  try {
    for (const [ufw, tool] of [['offered', 'ufw: allow 22/tcp; default deny incoming; --force enable'], ['not offered', 'apply the iptables firewall']] as const) {
      const dry = await runFirewall(true, ufw, ufw);
      const real = await runFirewall(false, ufw, ufw);
      assert.deepEqual(real.changes, dry.changes, `${ufw}: the real run made what the dry run listed`);
      assert.ok(dry.changes.includes(tool), `${ufw}: ${dry.changes.join('; ')}`);
      assert.deepEqual(dry.scripts, [], 'a dry run runs nothing but the reading');
    }
    // Without lists the dry run lists their refresh and stops: it cannot know the tool, so it names none.
    const dry = await runFirewall(true, 'no lists', 'offered');
    assert.deepEqual(dry.changes, ["refresh apt's package lists (there are none yet, and they tell whether ufw can be installed)"]);
    const real = await runFirewall(false, 'no lists', 'offered');
    assert.deepEqual(real.changes, [dry.changes[0], 'install ufw', 'ufw: allow 22/tcp; default deny incoming; --force enable']);
    assert.ok(probe.mock.callCount() >= 2, 'each real run that enabled a firewall opened a new SSH connection');
  } finally {
    probe.mock.restore();
  }
});
