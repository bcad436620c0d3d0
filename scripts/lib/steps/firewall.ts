// The droplet's firewall (hosts.X.firewall = true): incoming connections are allowed to the SSH
// port, to 80 and 443 when the host has domains (nginx) — and, with a local PostgreSQL, from the
// Docker networks to 5432, which is how the backend reaches it — and denied otherwise. ufw where
// it can be installed, else plain iptables. The SSH port is always allowed before anything is
// denied, rules the operator added are kept, and after a change a fresh SSH connection must get
// in, or the firewall is turned off again and the step fails: a run never locks the operator out.
//
// Ports Docker publishes never reach these rules (Docker's NAT sends them to FORWARD), so with
// firewall = true the backend's ports 3210, 3211 and 6791 are published on 127.0.0.1 only
// (inventory.ts, compose.ts): without domains the operator reaches them through an SSH tunnel.
import type { Host } from '../inventory.ts';
import type { Fact, Step } from '../step.ts';
import { STATE_DIR } from '../step.ts';
import type { Change } from '../plan.ts';
import { fileChanges, packageChanges, phase, skip } from '../plan.ts';
import type { FileState } from '../files.ts';
import { fileFact, MANAGED_MARKER, sha256 } from '../files.ts';
import type { Packages } from '../system.ts';
import { aptUpdateScript, initSystem, installedPackages } from '../system.ts';
import { renderTemplate, templateText } from '../templates.ts';
import type { Script } from '../shell.ts';
import { lines, script, sh } from '../shell.ts';
import type { DockerNetworks } from './docker.ts';
import { dockerNetworks } from './docker.ts';

export interface Opening { port: number; from?: string; why: string }

/** What must stay reachable, in the order it is allowed: SSH first; 80 and 443 only for nginx (domains). */
export function openings(host: Host, dockerSubnets: string[]): Opening[] {
  const list: Opening[] = [{ port: host.port, why: 'SSH' }];
  if (host.domains) list.push({ port: 80, why: 'HTTP (ACME challenges, redirect)' }, { port: 443, why: 'HTTPS' });
  if (host.postgres.mode === 'local') for (const subnet of dockerSubnets) list.push({ port: 5432, from: subnet, why: 'PostgreSQL for the backend containers' });
  return list;
}

/** The words of the ufw command (after `ufw `) for an opening. */
const ufwRuleWords = (o: Opening): Array<string | number> =>
  o.from ? ['allow', 'from', o.from, 'to', 'any', 'port', o.port, 'proto', 'tcp'] : ['allow', `${o.port}/tcp`];

/** The ufw command (after `ufw `) for an opening, as `ufw show added` prints it back. */
export const ufwRule = (o: Opening) => ufwRuleWords(o).join(' ');

export interface UfwState { installed: boolean; active: boolean; defaultInput?: string; rules: string[] }

export const ufwState: Fact<UfwState> = {
  key: 'ufw',
  command: lines(
    sh`command -v ufw >/dev/null || exit 0`,
    sh`echo installed`,
    sh`ufw status | head -n 1`,
    sh`sed -n 's/^DEFAULT_INPUT_POLICY=//p' /etc/default/ufw | tr -d '"' | sed 's/^/input /'`,
    sh`ufw show added`,
  ),
  parse: out => {
    const lines = out.split('\n').map(l => l.trim());
    return {
      installed: lines.includes('installed'),
      active: lines.includes('Status: active'),
      defaultInput: lines.find(l => l.startsWith('input '))?.slice(6),
      // "ufw allow 22/tcp comment 'x'" → "allow 22/tcp": comments do not make another rule.
      rules: lines.filter(l => l.startsWith('ufw ')).map(l => l.slice(4).replace(/\s+comment\s+'.*'$/, '')),
    };
  },
};

/** The ufw commands still needed, in order: missing rules, then the default, then enabling. */
export function planUfw(wanted: Opening[], state: UfwState): Script[] {
  const commands = wanted.filter(o => !state.rules.includes(ufwRule(o))).map(o => sh`ufw ${ufwRuleWords(o)} comment ${`convex-ops: ${o.why}`}`);
  if (state.defaultInput !== 'DROP' && state.defaultInput !== 'REJECT') commands.push(sh`ufw default deny incoming`);
  if (!state.active) commands.push(sh`ufw --force enable`);
  return commands;
}

export const IPTABLES_SCRIPT = '/usr/local/sbin/convex-ops-firewall';
const IPTABLES_UNIT = '/etc/systemd/system/convex-ops-firewall.service';
const IPTABLES_CRON = '/etc/cron.d/convex-ops-firewall';
const IPTABLES_APPLIED = `${STATE_DIR}/firewall-applied`;

/** How the operator reaches the backend of a firewalled host without domains: its ports are on loopback. */
export function tunnelHint(host: Host): string {
  const login = `${host.user}@${host.address}${host.port === 22 ? '' : ` -p ${host.port}`}`;
  return `no [domains]: ports 3210, 3211 and 6791 are published on 127.0.0.1 only and do not answer from outside; reach them through an SSH tunnel: ssh -N -L 3210:127.0.0.1:3210 -L 3211:127.0.0.1:3211 -L 6791:127.0.0.1:6791 ${login}`;
}

export function renderIptablesScript(host: Host, wanted: Opening[], boot: string): string {
  const accept = (o: Opening) => `${o.from ? `-s ${o.from} ` : ''}-p tcp --dport ${o.port}`;
  const rest = wanted.slice(1);
  return renderTemplate(
    templateText('firewall-iptables.sh'),
    {
      managed: MANAGED_MARKER,
      host: host.name,
      boot,
      ssh_port: host.port,
      ipv4_accept: rest.map(accept),
      ipv6_accept: rest.filter(o => !o.from).map(accept),
    },
    'firewall-iptables.sh',
  );
}

export const iptablesState: Fact<{ applied: string; hooked: boolean }> = {
  key: 'iptables-firewall',
  command: sh`cat ${IPTABLES_APPLIED} 2>/dev/null; iptables -C INPUT -j convex-ops-input 2>/dev/null && echo hooked; true`,
  parse: out => ({ applied: out.split('\n')[0]!.trim(), hooked: /^hooked$/m.test(out) }),
};

/**
 * Whether apt can give this host ufw, from the package lists it has: the same reading in a dry
 * run and a real run, so both choose the same tool. Without any lists apt cannot tell (a fresh
 * image), and they are refreshed first.
 */
export type UfwAvailability = 'installed' | 'offered' | 'not offered' | 'no lists';

export const ufwAvailability: Fact<UfwAvailability> = {
  key: 'ufw-availability',
  command: lines(
    sh`if command -v ufw >/dev/null; then echo installed; exit 0; fi`,
    sh`ls /var/lib/apt/lists/ 2>/dev/null | grep -q '_Packages' || { echo 'no lists'; exit 0; }`,
    sh`if apt-cache policy ufw 2>/dev/null | grep -q 'Candidate: [0-9]'; then echo offered; else echo 'not offered'; fi`,
  ),
  parse: out => {
    const answer = out.trim();
    return answer === 'installed' || answer === 'offered' || answer === 'no lists' ? answer : 'not offered';
  },
};

/** The SSH port first, then what the host needs; refused when the Docker networks a local PostgreSQL must allow are not there. */
function wantedOpenings(host: Host, networks: DockerNetworks): Opening[] {
  if (host.postgres.mode === 'local' && networks.subnets.length === 0) {
    throw new Error('the Docker networks were not found, so the backend\'s access to PostgreSQL cannot be allowed. Run scripts/install.ts first; nothing was changed.');
  }
  return openings(host, networks.subnets);
}

const lockedOut = (host: Host) => (why: string) =>
  `after the firewall was enabled, a new SSH connection to ${host.address}:${host.port} failed (${why}), ` +
  `so the firewall was turned off again. Check hosts.${host.name}.port and the droplet's sshd port.`;

/**
 * Turns the iptables firewall off and takes it out of the boot, so that a failed probe leaves
 * nothing that would lock the operator out at the next boot either (the script on disk may be
 * the one that failed). The next run applies it again and proves it before hooking it.
 */
export function iptablesUndo(init: 'systemd' | 'other'): Script {
  const unhook =
    init === 'systemd'
      ? sh`if [ -e ${IPTABLES_UNIT} ]; then systemctl disable convex-ops-firewall.service; rm -f ${IPTABLES_UNIT}; systemctl daemon-reload; fi`
      : sh`rm -f ${IPTABLES_CRON}`;
  const forget = sh`rm -f ${IPTABLES_APPLIED}`;
  return script`iptables -D INPUT -j convex-ops-input 2>/dev/null; ip6tables -D INPUT -j convex-ops-input 2>/dev/null; ${forget}; ${unhook}; true`;
}

/** The ufw commands still needed, as one change that a new SSH connection must survive. */
function ufwChanges(host: Host, wanted: Opening[], state: UfwState): Change[] {
  const commands = planUfw(wanted, state);
  if (commands.length === 0) return [];
  // Undo only what this run did to deny: the rules it added are allows and stay.
  const undo: Script[] = [
    ...(commands.includes(sh`ufw --force enable`) ? [sh`ufw --force disable`] : []),
    ...(commands.includes(sh`ufw default deny incoming`) ? [sh`ufw default ${state.defaultInput === 'ACCEPT' ? 'allow' : 'deny'} incoming`] : []),
  ];
  return [
    {
      label: `ufw: ${commands.map(c => c.replace(/^ufw /, '').replace(/ comment '.*'$/, '')).join('; ')}`,
      script: lines(sh`set -e`, ...commands),
      ...(undo.length ? { sshProbe: { undo: undo.reduce((done, next) => script`${done}; ${next}`), failure: lockedOut(host) } } : {}),
    },
  ];
}

export interface IptablesFacts {
  init: 'systemd' | 'other';
  iptables: { applied: string; hooked: boolean };
  script: FileState;
  unit: FileState;
  cron: FileState;
}

/** The script, applied and proven by a new SSH connection, and only then hooked into the boot. */
function iptablesChanges(host: Host, wanted: Opening[], facts: IptablesFacts): Change[] {
  const { init } = facts;
  const script = renderIptablesScript(host, wanted, init === 'systemd' ? IPTABLES_UNIT : IPTABLES_CRON);
  const hash = sha256(script);
  const changes = fileChanges(facts.script, { path: IPTABLES_SCRIPT, content: script, mode: '755', label: 'the iptables firewall script' });
  if (facts.iptables.applied !== hash || !facts.iptables.hooked) {
    const proven = sh`mkdir -p ${STATE_DIR} && echo ${hash} > ${IPTABLES_APPLIED}`;
    changes.push({ label: 'apply the iptables firewall', script: sh`${IPTABLES_SCRIPT}`, sshProbe: { undo: iptablesUndo(init), proven, failure: lockedOut(host) } });
  }
  const values = { managed: MANAGED_MARKER, script: IPTABLES_SCRIPT };
  if (init !== 'systemd') return [...changes, ...fileChanges(facts.cron, { path: IPTABLES_CRON, content: renderTemplate(templateText('firewall-iptables.cron'), values), mode: '644' })];
  const unit = fileChanges(facts.unit, { path: IPTABLES_UNIT, content: renderTemplate(templateText('firewall-iptables.service'), values), mode: '644' });
  const enable = { label: 'enable convex-ops-firewall.service at boot', script: sh`systemctl daemon-reload && systemctl enable convex-ops-firewall.service` };
  return [...changes, ...unit, ...(unit.length ? [enable] : [])];
}

/** First of all, on a host whose apt has no package lists yet (a fresh image), their refresh: only they tell whether ufw is offered. */
export function planAptLists(facts: { ufw: UfwAvailability; networks: DockerNetworks }, host: Host): Change[] {
  if (!host.firewall) skip(`hosts.${host.name}.firewall is false`);
  wantedOpenings(host, facts.networks);
  if (facts.ufw !== 'no lists') return [];
  return [{ label: "refresh apt's package lists (there are none yet, and they tell whether ufw can be installed)", script: aptUpdateScript(), streams: true }];
}

/**
 * ufw where it is installed or apt offers it, else iptables. Without package lists apt cannot
 * tell: a dry run stops here, after the refresh it lists; a real run has refreshed them.
 */
export function firewallTool(ufw: UfwAvailability): 'ufw' | 'iptables' {
  if (ufw === 'no lists') {
    throw new Error('apt has no package lists even after apt-get update, so it cannot tell whether ufw can be installed. Run apt-get update on the droplet to see why; the firewall was not changed.');
  }
  return ufw === 'not offered' ? 'iptables' : 'ufw';
}

/** The chosen tool's packages. */
export function planFirewallPackages(facts: { packages: Packages; init: 'systemd' | 'other'; ufw: UfwAvailability }): Change[] {
  if (firewallTool(facts.ufw) === 'ufw') return packageChanges(facts.packages, ['ufw']);
  return packageChanges(facts.packages, facts.init === 'systemd' ? ['iptables'] : ['iptables', 'cron']);
}

export interface FirewallFacts extends IptablesFacts {
  ufw: UfwAvailability;
  ufwState: UfwState;
  networks: DockerNetworks;
}

/** ufw's rules, or the iptables firewall, as the tool apt offers says. */
export function planFirewall(facts: FirewallFacts, host: Host): Change[] {
  const wanted = wantedOpenings(host, facts.networks);
  return firewallTool(facts.ufw) === 'iptables' ? iptablesChanges(host, wanted, facts) : ufwChanges(host, wanted, facts.ufwState);
}

function summary(facts: FirewallFacts, host: Host): string {
  const wanted = wantedOpenings(host, facts.networks);
  const said =
    firewallTool(facts.ufw) === 'iptables'
      ? `iptables (chain convex-ops-input) allows ${wanted.map(o => `${o.port}/tcp${o.from ? ` from ${o.from}` : ''}`).join(', ')}; other incoming connections are dropped`
      : `ufw allows ${wanted.map(o => (o.from ? `${o.port}/tcp from ${o.from}` : `${o.port}/tcp`)).join(', ')}; other incoming connections are denied`;
  return host.domains ? said : `${said}; ${tunnelHint(host)}`;
}

export const firewall: Step = {
  name: 'firewall',
  phases: [
    phase({ facts: () => ({ ufw: ufwAvailability, networks: dockerNetworks }), plan: planAptLists }),
    phase({ facts: () => ({ packages: installedPackages, init: initSystem, ufw: ufwAvailability }), plan: planFirewallPackages }),
    phase({
      facts: () => ({
        init: initSystem,
        ufw: ufwAvailability,
        ufwState,
        networks: dockerNetworks,
        iptables: iptablesState,
        script: fileFact(IPTABLES_SCRIPT),
        unit: fileFact(IPTABLES_UNIT),
        cron: fileFact(IPTABLES_CRON),
      }),
      plan: planFirewall,
      ok: summary,
      warnings: (facts, host) => [
        ...(firewallTool(facts.ufw) === 'iptables' ? [`${host.name}: ufw cannot be installed from apt here; the firewall is made with plain iptables`] : []),
        // The run that closes the ports says how to reach them; a converged run says it in its summary.
        ...(!host.domains && planFirewall(facts, host).length ? [tunnelHint(host)] : []),
      ],
    }),
  ],
};
