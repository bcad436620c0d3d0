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
import type { Fact, Step, StepContext } from '../step.ts';
import { STATE_DIR } from '../step.ts';
import { Connection } from '../ssh.ts';
import { ensureFile, fileFact, MANAGED_MARKER, sha256 } from '../files.ts';
import { ensurePackages, initSystem, installedPackages } from '../system.ts';
import { renderTemplate, templateText } from '../templates.ts';
import { sh } from '../shell.ts';
import { dockerNetworks } from './docker.ts';

export interface Opening { port: number; from?: string; why: string }

/** What must stay reachable, in the order it is allowed: SSH first; 80 and 443 only for nginx (domains). */
export function openings(host: Host, dockerSubnets: string[]): Opening[] {
  const list: Opening[] = [{ port: host.port, why: 'SSH' }];
  if (host.domains) list.push({ port: 80, why: 'HTTP (ACME challenges, redirect)' }, { port: 443, why: 'HTTPS' });
  if (host.postgres.mode === 'local') for (const subnet of dockerSubnets) list.push({ port: 5432, from: subnet, why: 'PostgreSQL for the backend containers' });
  return list;
}

/** The ufw command (after `ufw `) for an opening, as `ufw show added` prints it back. */
export const ufwRule = (o: Opening) => (o.from ? `allow from ${o.from} to any port ${o.port} proto tcp` : `allow ${o.port}/tcp`);

export interface UfwState { installed: boolean; active: boolean; defaultInput?: string; rules: string[] }

export const ufwState: Fact<UfwState> = {
  key: 'ufw',
  command: [
    'command -v ufw >/dev/null || exit 0',
    'echo installed',
    'ufw status | head -n 1',
    `sed -n 's/^DEFAULT_INPUT_POLICY=//p' /etc/default/ufw | tr -d '"' | sed 's/^/input /'`,
    'ufw show added',
  ].join('\n'),
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
export function planUfw(wanted: Opening[], state: UfwState): string[] {
  const commands = wanted.filter(o => !state.rules.includes(ufwRule(o))).map(o => `ufw ${ufwRule(o)} comment ${`'convex-ops: ${o.why}'`}`);
  if (state.defaultInput !== 'DROP' && state.defaultInput !== 'REJECT') commands.push('ufw default deny incoming');
  if (!state.active) commands.push('ufw --force enable');
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
  command: `cat ${IPTABLES_APPLIED} 2>/dev/null; iptables -C INPUT -j convex-ops-input 2>/dev/null && echo hooked; true`,
  parse: out => ({ applied: out.split('\n')[0]!.trim(), hooked: /^hooked$/m.test(out) }),
};

/** Whether ufw is installed or apt can install it (asked after an update: lists may be stale). */
async function ufwAvailable(ctx: StepContext): Promise<boolean> {
  if ((await ctx.fact(ufwState)).installed) return true;
  const policy = await ctx.run(`${ctx.check ? '' : 'apt-get -q update >/dev/null 2>&1; '}apt-cache policy ufw`, 'is ufw available', { allowFail: true });
  if (!/Candidate: [0-9]/.test(policy.stdout)) {
    ctx.warn(`${ctx.host.name}: ufw cannot be installed from apt here; the firewall is made with plain iptables`);
    return false;
  }
  await ensurePackages(ctx, ['ufw']);
  return true;
}

/**
 * A new SSH connection must get in once the firewall is up; if it cannot, the firewall is turned
 * off again through the connection still open (established connections are always let through).
 */
async function proveSshStillWorks(ctx: StepContext, undo: string): Promise<void> {
  if (ctx.check) return;
  try {
    const probe = await Connection.open(ctx.host, { acceptNew: false, retries: 1 });
    probe.close();
  } catch (error) {
    await ctx.run(undo, 'turn the firewall off again');
    throw new Error(
      `after the firewall was enabled, a new SSH connection to ${ctx.host.address}:${ctx.host.port} failed (${(error as Error).message}), ` +
        `so the firewall was turned off again. Check hosts.${ctx.host.name}.port and the droplet's sshd port.`,
    );
  }
}

async function withUfw(ctx: StepContext, wanted: Opening[]): Promise<string> {
  const state = await ctx.fact(ufwState);
  const commands = planUfw(wanted, state);
  const summary = `ufw allows ${wanted.map(o => (o.from ? `${o.port}/tcp from ${o.from}` : `${o.port}/tcp`)).join(', ')}; other incoming connections are denied`;
  if (commands.length === 0) return summary;
  const what = `ufw: ${commands.map(c => c.replace(/^ufw /, '').replace(/ comment '.*'$/, '')).join('; ')}`;
  await ctx.change(what, () => ctx.run(['set -e', ...commands].join('\n'), 'configure ufw'));
  // Undo only what this run did to deny: the rules it added are allows and stay.
  const undo = [
    ...(commands.includes('ufw --force enable') ? ['ufw --force disable'] : []),
    ...(commands.includes('ufw default deny incoming') ? [`ufw default ${state.defaultInput === 'ACCEPT' ? 'allow' : 'deny'} incoming`] : []),
  ];
  if (undo.length) await proveSshStillWorks(ctx, undo.join('; '));
  return summary;
}

/**
 * Turns the iptables firewall off and takes it out of the boot, so that a failed probe leaves
 * nothing that would lock the operator out at the next boot either (the script on disk may be
 * the one that failed). The next run applies it again and proves it before hooking it.
 */
export function iptablesUndo(init: 'systemd' | 'other'): string {
  const unhook =
    init === 'systemd'
      ? sh`if [ -e ${IPTABLES_UNIT} ]; then systemctl disable convex-ops-firewall.service; rm -f ${IPTABLES_UNIT}; systemctl daemon-reload; fi`
      : sh`rm -f ${IPTABLES_CRON}`;
  return [
    'iptables -D INPUT -j convex-ops-input 2>/dev/null',
    'ip6tables -D INPUT -j convex-ops-input 2>/dev/null',
    sh`rm -f ${IPTABLES_APPLIED}`,
    unhook,
    'true',
  ].join('; ');
}

async function withIptables(ctx: StepContext, wanted: Opening[]): Promise<string> {
  const init = await ctx.fact(initSystem);
  await ensurePackages(ctx, init === 'systemd' ? ['iptables'] : ['iptables', 'cron']);
  const boot = init === 'systemd' ? IPTABLES_UNIT : IPTABLES_CRON;
  const script = renderIptablesScript(ctx.host, wanted, boot);
  await ensureFile(ctx, { path: IPTABLES_SCRIPT, content: script, mode: '755', label: 'the iptables firewall script' });
  const state = await ctx.fact(iptablesState);
  const hash = sha256(script);
  if (state.applied !== hash || !state.hooked) {
    await ctx.change('apply the iptables firewall', () => ctx.run(IPTABLES_SCRIPT, 'apply iptables rules'));
    await proveSshStillWorks(ctx, iptablesUndo(init));
    if (!ctx.check) await ctx.run(sh`mkdir -p ${STATE_DIR} && echo ${hash} > ${IPTABLES_APPLIED}`, 'record the applied firewall');
  }
  // Only rules a new SSH connection got through are run again at boot.
  const values = { managed: MANAGED_MARKER, script: IPTABLES_SCRIPT };
  if (init === 'systemd') {
    const unitChanged = await ensureFile(ctx, { path: IPTABLES_UNIT, content: renderTemplate(templateText('firewall-iptables.service'), values), mode: '644' });
    if (unitChanged) await ctx.change('enable convex-ops-firewall.service at boot', () => ctx.run('systemctl daemon-reload && systemctl enable convex-ops-firewall.service', 'enable the firewall unit'));
  } else {
    await ensureFile(ctx, { path: IPTABLES_CRON, content: renderTemplate(templateText('firewall-iptables.cron'), values), mode: '644' });
  }
  return `iptables (chain convex-ops-input) allows ${wanted.map(o => `${o.port}/tcp${o.from ? ` from ${o.from}` : ''}`).join(', ')}; other incoming connections are dropped`;
}

export const firewall: Step = {
  name: 'firewall',
  facts: () => [installedPackages, initSystem, ufwState, iptablesState, dockerNetworks, fileFact(IPTABLES_SCRIPT)],
  async run(ctx) {
    const { host } = ctx;
    if (!host.firewall) ctx.skip(`hosts.${host.name}.firewall is false`);
    const networks = await ctx.fact(dockerNetworks);
    if (host.postgres.mode === 'local' && networks.subnets.length === 0 && !ctx.check) {
      throw new Error('the Docker networks were not found, so the backend\'s access to PostgreSQL cannot be allowed. Run scripts/install.ts first; nothing was changed.');
    }
    const wanted = openings(host, networks.subnets);
    const summary = (await ufwAvailable(ctx)) ? await withUfw(ctx, wanted) : await withIptables(ctx, wanted);
    if (host.domains) return summary;
    // A changed step shows its changes rather than this summary: the run that closes the ports says it too.
    if (ctx.changes.length) ctx.warn(tunnelHint(host));
    return `${summary}; ${tunnelHint(host)}`;
  },
};
