// Where a host is reached over SSH: the inventory's connection keys, then what the ssh config
// (ssh_config, $CONVEX_OPS_SSH_CONFIG or ~/.ssh/config) says for its address, then defaults; and
// the bastions (jump, or ProxyJump) in front of it, resolved once every host is known.
import { existsSync } from 'node:fs';
import type { Endpoint, Host } from '../inventory.ts';
import { InventoryError } from '../inventory.ts';
import { expandHome, SshConfig, SshConfigError, sshConfigPath } from '../ssh-config.ts';
import type { SshSettings } from '../ssh-config.ts';
import { resolveLocalPath } from './schema.ts';

/** Where a host is reached: from the inventory first, then the ssh config, then these. */
const CONNECTION_DEFAULTS = { port: 22, user: 'root', known_hosts: '~/.ssh/known_hosts' };
/** What OpenSSH offers when IdentitiesOnly is set and no IdentityFile is given. */
const DEFAULT_IDENTITIES = ['~/.ssh/id_ed25519', '~/.ssh/id_ecdsa', '~/.ssh/id_rsa'];

export function sshContext(problems: string[], warnings: string[]): SshContext {
  return { configs: new Map(), jumps: new Map(), problems, warnings };
}

/** Every host's bastions, once all hosts are known (a bastion may be another inventory host). */
export function resolveJumps(hosts: Map<string, Host>, ssh: SshContext): void {
  for (const host of hosts.values()) {
    try {
      host.jump = jumpsOf(host, hosts, ssh, new Map(), [host.name]);
    } catch (error) {
      if (!(error instanceof InventoryError || error instanceof SshConfigError)) throw error;
      ssh.problems.push(error.message);
    }
  }
}

export interface SshContext {
  /** Each ssh config file read once per inventory. */
  configs: Map<string, SshConfig | undefined>;
  /** Per host, its jump hosts as written (inventory jump, else ssh config ProxyJump), resolved once every host is known. */
  jumps: Map<string, { spec: string; at: string; config?: SshConfig }>;
  problems: string[];
  warnings: string[];
}

/**
 * Where a host is reached: inventory values first, then what its ssh config says for its address
 * (an alias there: HostName, User, Port, IdentityFile, UserKnownHostsFile, ProxyJump), then defaults.
 */
export function endpointOf(name: string, m: Record<string, unknown>, base: string, ssh: SshContext): Endpoint | undefined {
  const at = (key: string) => `hosts.${name}.${key}`;
  const local = (p: unknown) => (typeof p === 'string' ? resolveLocalPath(p, base) : undefined);
  const alias = m.address as string;
  const config = configFor(local(m.ssh_config), at('ssh_config'), ssh);
  let settings: SshSettings | undefined;
  try {
    settings = config?.lookup(alias, { user: m.user as string | undefined });
  } catch (error) {
    if (!(error instanceof SshConfigError)) throw error;
    ssh.problems.push(error.message);
    return undefined;
  }
  if (settings) warnIgnored(settings, `hosts.${name}`, alias, config!, ssh);
  const identity = local(m.identity) ?? (settings && identityOf(settings, `hosts.${name}`, alias, config!, ssh));
  const port = (m.port as number | undefined) ?? settings?.port ?? CONNECTION_DEFAULTS.port;
  if (port < 1 || port > 65535) ssh.problems.push(`${m.port === undefined ? `${config!.path}: Port for ${alias}` : at('port')}: ${port} is not a TCP port.`);
  const jump = (m.jump as string | undefined) ?? settings?.proxyJump;
  if (jump) ssh.jumps.set(name, { spec: jump, at: m.jump === undefined ? `${config!.path}: ProxyJump for ${alias}` : at('jump'), config });
  return {
    name,
    address: settings?.hostName ?? alias,
    port,
    user: (m.user as string | undefined) ?? settings?.user ?? CONNECTION_DEFAULTS.user,
    identity,
    identity_passphrase_env: m.identity_passphrase_env as string | undefined,
    known_hosts: local(m.known_hosts) ?? settings?.userKnownHostsFile ?? resolveLocalPath(CONNECTION_DEFAULTS.known_hosts, base),
    ...(config ? { ssh_config: config.path } : {}),
  };
}

function configFor(fromInventory: string | undefined, at: string, ssh: SshContext): SshConfig | undefined {
  const path = sshConfigPath(fromInventory);
  if (!path) return undefined;
  if (!ssh.configs.has(path)) {
    const readable = existsSync(path);
    if (!readable) {
      ssh.problems.push(
        fromInventory
          ? `${at}: ${path} does not exist. Fix the path, or remove ssh_config to use ~/.ssh/config.`
          : `CONVEX_OPS_SSH_CONFIG: ${path} does not exist. Fix the variable, or unset it to use ~/.ssh/config.`,
      );
    }
    ssh.configs.set(path, readable ? new SshConfig(path) : undefined);
  }
  return ssh.configs.get(path);
}

/** The first IdentityFile that exists, as OpenSSH would offer first; with IdentitiesOnly and none given, OpenSSH's default files. */
function identityOf(settings: SshSettings, at: string, alias: string, config: SshConfig, ssh: SshContext): string | undefined {
  const candidates = settings.identityFiles.length ? settings.identityFiles : settings.identitiesOnly ? DEFAULT_IDENTITIES.map(expandHome) : [];
  const found = candidates.find(file => existsSync(file));
  if (candidates.length && !found) {
    ssh.problems.push(`${at}: ${config.path} gives ${alias} the identity ${candidates.join(', ')}, and no such file exists. Fix IdentityFile there, or set identity in the inventory.`);
  }
  return found;
}

function warnIgnored(settings: SshSettings, at: string, alias: string, config: SshConfig, ssh: SshContext): void {
  if (!settings.ignored.length) return;
  const which = settings.ignored.join(', ');
  ssh.warnings.push(
    `${at}: ${config.path} sets ${which} for ${alias}, which convex-ops does not use: it connects itself, directly or through jump / ProxyJump. ` +
      `Check that ${alias} is the machine you mean without ${settings.ignored.length === 1 ? 'it' : 'them'}, or give the bastion as ProxyJump.`,
  );
}

/**
 * The bastions in front of a host, outermost first: each hop of jump (or ProxyJump) as
 * [user@]host[:port], where host is an inventory host (its settings, and its own jump), an alias
 * in the ssh config (with its ProxyJump), or an address. A bastion the inventory and the ssh
 * config say nothing about logs in with the host's identity and checks its key in the host's known_hosts.
 */
function jumpsOf(host: Host, hosts: Map<string, Host>, ssh: SshContext, done: Map<string, Endpoint[]>, trail: string[]): Endpoint[] {
  const given = ssh.jumps.get(host.name);
  if (!given) return [];
  const known = done.get(host.name);
  if (known) return known;
  const hops = hopsOf(given.spec, given.at, host, given.config, hosts, ssh, done, trail);
  done.set(host.name, hops);
  return hops;
}

function hopsOf(spec: string, at: string, host: Host, config: SshConfig | undefined, hosts: Map<string, Host>, ssh: SshContext, done: Map<string, Endpoint[]>, trail: string[]): Endpoint[] {
  if (spec.trim().toLowerCase() === 'none') return [];
  return spec.split(',').flatMap(hop => {
    const parsed = /^(?:([^@\s]+)@)?(\[[^\]\s]+\]|[^:@\s[\]]+)(?::(\d{1,5}))?$/.exec(hop.trim());
    if (!parsed) throw new InventoryError(`${at}: ${JSON.stringify(hop.trim())} is not a jump host. Write user@host:port, host, or the name of an inventory host or ssh config alias.`);
    const [, user, written, port] = parsed as unknown as [string, string | undefined, string, string | undefined];
    const target = written.replace(/^\[|\]$/g, '');
    if (trail.includes(target)) {
      throw new InventoryError(`${at}: the jump hosts go round in a circle (${[...trail, target].join(' → ')}). A host cannot be its own bastion: set jump = "none" in [hosts.${trail[trail.length - 1]}] if [defaults] gives it one.`);
    }
    const overrides = { ...(user ? { user } : {}), ...(port ? { port: Number(port) } : {}) };
    const bastion = hosts.get(target);
    if (bastion) {
      const { name, address, port: bastionPort, user: bastionUser, identity, identity_passphrase_env, known_hosts, ssh_config } = bastion;
      const endpoint: Endpoint = { name, address, port: bastionPort, user: bastionUser, identity, identity_passphrase_env, known_hosts, ssh_config };
      return [...jumpsOf(bastion, hosts, ssh, done, [...trail, target]), { ...endpoint, ...overrides }];
    }
    const settings = config?.lookup(target, { user });
    if (settings) warnIgnored(settings, at, target, config!, ssh);
    const identity = settings && identityOf(settings, at, target, config!, ssh);
    const endpoint: Endpoint = {
      name: target,
      address: settings?.hostName ?? target,
      port: settings?.port ?? CONNECTION_DEFAULTS.port,
      user: settings?.user ?? CONNECTION_DEFAULTS.user,
      ...(identity ? { identity } : { identity: host.identity, identity_passphrase_env: host.identity_passphrase_env }),
      known_hosts: settings?.userKnownHostsFile ?? host.known_hosts,
      ...(config ? { ssh_config: config.path } : {}),
    };
    const before = settings?.proxyJump ? hopsOf(settings.proxyJump, `${config!.path}: ProxyJump for ${target}`, host, config, hosts, ssh, done, [...trail, target]) : [];
    return [...before, { ...endpoint, ...overrides }];
  });
}
