// inventory.toml: loaded, merged ([defaults] under each host) and validated before anything
// connects. Errors carry the key's path (hosts.dev.postgres.url) and say how to fix it.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { isIP } from 'node:net';
import TOML from '@iarna/toml';
import { expandHome, SshConfig, SshConfigError, sshConfigPath } from './ssh-config.ts';
import type { SshSettings } from './ssh-config.ts';

export interface Domains { api: string; site: string; dashboard: string }
export interface PostgresConfig {
  mode: 'local' | 'external';
  user: string;
  /** external mode: postgresql://host:port[?options], without a database name */
  url?: string;
  /** external mode: the operator-side environment variable that holds the password */
  password_env?: string;
  /** external mode: a CA file (on the operator's machine) for a server whose CA is not public */
  ca_file?: string;
}
export interface AcmeConfig { email?: string; directory: string; ca_bundle?: string }
/** Where and as whom to log in over SSH: a host, or a bastion on the way to it. */
export interface Endpoint {
  /** Who it is in messages: the inventory host, or the bastion as the inventory or ssh config names it. */
  name: string;
  address: string;
  port: number;
  user: string;
  identity?: string;
  identity_passphrase_env?: string;
  known_hosts: string;
  /** The ssh config its settings were looked up in, named when its address does not resolve. */
  ssh_config?: string;
}
export interface Host extends Endpoint {
  /** The bastions to go through, the first reached directly, each through the one before; none: direct. */
  jump?: Endpoint[];
  volume: string;
  root: string;
  instance_name: string;
  backend_image: string;
  dashboard_image: string;
  bind_address: string;
  domains?: Domains;
  dashboard_allow: string[];
  firewall: boolean;
  acme: AcmeConfig;
  postgres: PostgresConfig;
  backup: { keep: number };
  promote_from?: string;
}
export interface Inventory { path: string; hosts: Map<string, Host>; groups: Map<string, string[]>; warnings: string[] }

export const ACME_DIRECTORIES: Record<string, string> = {
  production: 'https://acme-v02.api.letsencrypt.org/directory',
  staging: 'https://acme-staging-v02.api.letsencrypt.org/directory',
};

export class InventoryError extends Error {}

type Spec =
  | { type: 'string' | 'integer' | 'boolean' | 'string[]' }
  | { type: 'table'; keys: Record<string, Spec> };

const DOMAIN_KEYS: Record<string, Spec> = { api: { type: 'string' }, site: { type: 'string' }, dashboard: { type: 'string' } };
const HOST_KEYS: Record<string, Spec> = {
  address: { type: 'string' },
  port: { type: 'integer' },
  user: { type: 'string' },
  identity: { type: 'string' },
  identity_passphrase_env: { type: 'string' },
  known_hosts: { type: 'string' },
  ssh_config: { type: 'string' },
  jump: { type: 'string' },
  volume: { type: 'string' },
  root: { type: 'string' },
  instance_name: { type: 'string' },
  backend_image: { type: 'string' },
  dashboard_image: { type: 'string' },
  bind_address: { type: 'string' },
  domains: { type: 'table', keys: DOMAIN_KEYS },
  dashboard_allow: { type: 'string[]' },
  firewall: { type: 'boolean' },
  promote_from: { type: 'string' },
  acme: { type: 'table', keys: { email: { type: 'string' }, directory: { type: 'string' }, ca_bundle: { type: 'string' } } },
  postgres: {
    type: 'table',
    keys: { mode: { type: 'string' }, user: { type: 'string' }, url: { type: 'string' }, password_env: { type: 'string' }, ca_file: { type: 'string' } },
  },
  backup: { type: 'table', keys: { keep: { type: 'integer' } } },
};
const TOP_KEYS = ['defaults', 'hosts', 'groups'];

/** Where a host is reached: from the inventory first, then the ssh config, then these. */
const CONNECTION_DEFAULTS = { port: 22, user: 'root', known_hosts: '~/.ssh/known_hosts' };
/** What OpenSSH offers when IdentitiesOnly is set and no IdentityFile is given. */
const DEFAULT_IDENTITIES = ['~/.ssh/id_ed25519', '~/.ssh/id_ecdsa', '~/.ssh/id_rsa'];

const DEFAULTS = {
  root: '/opt/convex',
  instance_name: 'convex-self-hosted',
  bind_address: '0.0.0.0',
  dashboard_allow: [] as string[],
  firewall: false,
  acme: { directory: 'production' },
  postgres: { mode: 'local', user: 'convex' },
  backup: { keep: 7 },
};

export function defaultInventoryPath(): string {
  return process.env.CONVEX_OPS_INVENTORY ?? 'inventory.toml';
}

export function loadInventory(path: string): Inventory {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    throw new InventoryError(`${path}: cannot read the inventory. Pass --inventory FILE or set CONVEX_OPS_INVENTORY.`);
  }
  let data: Record<string, unknown>;
  try {
    data = TOML.parse(text) as Record<string, unknown>;
  } catch (error) {
    const e = error as { line?: number; col?: number; message: string };
    const where = e.line !== undefined ? `:${e.line + 1}:${(e.col ?? 0) + 1}` : '';
    const reason = e.message.split('\n')[0];
    throw new InventoryError(`${path}${where}: invalid TOML: ${reason}. Fix the syntax at that line and column.`);
  }
  return validate(data, path);
}

/** Host and group names become file names (.secrets/<host>.env) and words in droplet files. */
export const NAME = /^[A-Za-z0-9][A-Za-z0-9_-]*$/;

/** A key or value as shown in a message: JSON-quoted when it is not plain, so no control
 * character from the inventory ever reaches the terminal or the log raw. */
const shown = (text: string) => (NAME.test(text) ? text : JSON.stringify(text));

/**
 * Every string of the inventory, keys included, with the path that leads to it. Values end up
 * in files on the droplet (cron lines, scripts, configs), where a newline starts a new line
 * that the file's reader would obey, so no string may hold a control character.
 */
function controlCharacterProblems(value: unknown, at: string, problems: string[]): void {
  const control = /\p{Cc}/u;
  if (typeof value === 'string') {
    if (control.test(value)) problems.push(`${at}: contains a control character (a newline, tab or similar), which could start a line of its own in a file on the droplet. Remove it.`);
  } else if (Array.isArray(value)) {
    value.forEach((item, i) => controlCharacterProblems(item, `${at}[${i}]`, problems));
  } else if (isTable(value)) {
    for (const [key, item] of Object.entries(value)) {
      const path = at ? `${at}.${shown(key)}` : shown(key);
      if (control.test(key)) problems.push(`${path}: the key contains a control character (a newline, tab or similar). Remove it.`);
      controlCharacterProblems(item, path, problems);
    }
  }
}

function throwProblems(path: string, problems: string[]): never {
  throw new InventoryError(`${path}: ${problems.length === 1 ? problems[0] : '\n  - ' + problems.join('\n  - ')}`);
}

function validate(data: Record<string, unknown>, path: string): Inventory {
  const problems: string[] = [];
  const warnings: string[] = [];
  // First and alone: the other messages quote values, which must not carry a control character.
  controlCharacterProblems(data, '', problems);
  if (problems.length) throwProblems(path, problems);
  for (const key of Object.keys(data)) {
    if (!TOP_KEYS.includes(key)) problems.push(unknownKey(key, key, TOP_KEYS));
  }
  const defaults = asTable(data.defaults, 'defaults', problems);
  checkKeys(defaults, HOST_KEYS, 'defaults', problems);
  const hostTables = asTable(data.hosts, 'hosts', problems);
  if (Object.keys(hostTables).length === 0) problems.push(`hosts: no host is defined. Add a [hosts.NAME] table with address and volume.`);

  const base = dirname(resolve(path));
  const hosts = new Map<string, Host>();
  const ssh: SshContext = { configs: new Map(), jumps: new Map(), problems, warnings };
  for (const [name, raw] of Object.entries(hostTables)) {
    if (!NAME.test(name)) {
      problems.push(`hosts.${shown(name)}: ${shown(name)} is not a host name. Use letters, digits, "-" and "_", starting with a letter or digit, e.g. [hosts.prod-eu].`);
      continue;
    }
    const table = asTable(raw, `hosts.${name}`, problems);
    checkKeys(table, HOST_KEYS, `hosts.${name}`, problems);
    const merged = deepMerge(deepMerge(structuredClone(DEFAULTS), defaults), table) as Record<string, unknown>;
    const host = toHost(name, merged, base, problems, warnings, ssh);
    if (host) hosts.set(name, host);
  }
  for (const host of hosts.values()) {
    try {
      host.jump = jumpsOf(host, hosts, ssh, new Map(), [host.name]);
    } catch (error) {
      if (!(error instanceof InventoryError || error instanceof SshConfigError)) throw error;
      problems.push(error.message);
    }
  }

  const groups = new Map<string, string[]>();
  for (const [group, members] of Object.entries(asTable(data.groups, 'groups', problems))) {
    if (!NAME.test(group)) {
      problems.push(`groups.${shown(group)}: ${shown(group)} is not a group name. Use letters, digits, "-" and "_", starting with a letter or digit, e.g. web-eu = ["dev", "prod"].`);
      continue;
    }
    if (!Array.isArray(members) || members.some(m => typeof m !== 'string')) {
      problems.push(`groups.${group}: must be a list of host names, e.g. ${group} = ["dev", "prod"].`);
      continue;
    }
    for (const member of members as string[]) {
      if (!hostTables[member]) problems.push(`groups.${group}: ${JSON.stringify(member)} is not a host. Known hosts: ${Object.keys(hostTables).join(', ')}.`);
    }
    if (hostTables[group]) problems.push(`groups.${group}: a group cannot have the name of a host.`);
    groups.set(group, members as string[]);
  }
  for (const host of hosts.values()) {
    if (host.promote_from && !hosts.has(host.promote_from)) {
      problems.push(`hosts.${host.name}.promote_from: "${host.promote_from}" is not a host. Known hosts: ${[...hosts.keys()].join(', ')}.`);
    }
  }
  if (problems.length) throwProblems(path, problems);
  return { path, hosts, groups, warnings };
}

/** An image reference with a tag or a digest (what compose's image: may name). */
export function isPinnedImage(value: string): boolean {
  return /^[a-z0-9][a-z0-9._\-/:]*(@sha256:[a-f0-9]{64})?$/.test(value) && (value.includes('@') || /:[\w][\w.-]*$/.test(value.split('/').pop() ?? ''));
}

function toHost(name: string, m: Record<string, unknown>, base: string, problems: string[], warnings: string[], ssh: SshContext): Host | undefined {
  const at = (key: string) => `hosts.${name}.${key}`;
  const before = problems.length;
  for (const key of ['address', 'volume', 'backend_image', 'dashboard_image']) {
    if (m[key] === undefined) problems.push(`${at(key)}: required key is missing. Set it in [hosts.${name}] or [defaults].`);
  }
  const instance = String(m.instance_name);
  if (!/^[a-z][a-z0-9-]{0,62}$/.test(instance) || instance.endsWith('-')) {
    problems.push(
      `${at('instance_name')}: "${instance}" cannot become a PostgreSQL database name (Convex uses the name with "-" replaced by "_"). ` +
        `Use lowercase letters, digits and "-", starting with a letter, at most 63 characters, e.g. "convex-self-hosted".`,
    );
  }
  for (const key of ['volume', 'root']) {
    const value = m[key];
    if (typeof value === 'string' && !isPlainAbsolutePath(value)) {
      problems.push(
        `${at(key)}: ${JSON.stringify(value)} must be an absolute path below / made of letters, digits, ".", "_", "-" and single "/" ` +
          `(no empty, "." or ".." parts), e.g. "/mnt/convex_data".`,
      );
    }
  }
  if (typeof m.bind_address === 'string' && !isIP(m.bind_address)) {
    problems.push(`${at('bind_address')}: ${JSON.stringify(m.bind_address)} is not an IP address. Use one of the droplet's addresses, e.g. "0.0.0.0" (all) or "127.0.0.1".`);
  }
  for (const key of ['backend_image', 'dashboard_image']) {
    const value = m[key];
    if (typeof value !== 'string') continue;
    if (!isPinnedImage(value)) {
      problems.push(`${at(key)}: "${value}" must name an image with a tag or digest, e.g. ghcr.io/get-convex/convex-backend:<git sha> or …@sha256:<digest>.`);
    } else if (value.endsWith(':latest')) {
      warnings.push(`${at(key)}: ":latest" moves without notice, so promotion cannot guarantee that prod runs what dev ran. Pin a tag or a digest.`);
    }
  }
  if (m.promote_from === name) problems.push(`${at('promote_from')}: a host cannot promote from itself.`);
  const pg = m.postgres as Record<string, unknown>;
  if (pg.mode !== 'local' && pg.mode !== 'external') {
    problems.push(`${at('postgres.mode')}: "${String(pg.mode)}" is not a mode. Use "local" (install PostgreSQL on the droplet) or "external".`);
  }
  if (pg.mode === 'external') {
    if (typeof pg.url !== 'string') problems.push(`${at('postgres.url')}: required in external mode, e.g. "postgresql://db.example.com:25060".`);
    if (typeof pg.password_env !== 'string') problems.push(`${at('postgres.password_env')}: required in external mode: the name of an environment variable on your machine that holds the password.`);
    if (typeof pg.url === 'string') checkClusterUrl(pg.url, at('postgres.url'), problems);
  }
  if (typeof pg.user === 'string' && !/^[a-z_][a-z0-9_]{0,62}$/.test(pg.user)) {
    problems.push(`${at('postgres.user')}: "${pg.user}" is not a simple PostgreSQL role name. Use lowercase letters, digits and "_".`);
  }
  const domains = m.domains as Record<string, unknown> | undefined;
  if (domains) {
    for (const key of Object.keys(DOMAIN_KEYS)) {
      const value = domains[key];
      if (typeof value !== 'string') problems.push(`${at('domains.' + key)}: required when [domains] is set.`);
      else if (!/^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$/.test(value)) problems.push(`${at('domains.' + key)}: "${value}" is not a domain name.`);
    }
  }
  const acme = m.acme as Record<string, unknown>;
  if (domains && typeof acme.email !== 'string') problems.push(`${at('acme.email')}: required when the host has domains (Let's Encrypt needs a contact address).`);
  if (typeof acme.email === 'string' && !/^[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$/.test(acme.email)) {
    problems.push(`${at('acme.email')}: ${JSON.stringify(acme.email)} is not a plain e-mail address. Write only the address, e.g. "ops@example.com".`);
  }
  const directory = String(acme.directory);
  if (!ACME_DIRECTORIES[directory] && !isHttpsUrl(directory)) {
    problems.push(
      `${at('acme.directory')}: ${JSON.stringify(directory)} is neither "production", "staging" nor an https:// ACME directory URL ` +
        `(printable characters, no spaces, no user or password), e.g. "https://acme.example.com/directory".`,
    );
  }
  const allowed = (m.dashboard_allow as string[]) ?? [];
  for (const cidr of allowed) {
    if (!/^[0-9a-fA-F.:]+(\/\d{1,3})?$/.test(cidr)) problems.push(`${at('dashboard_allow')}: ${JSON.stringify(cidr)} is not an address or CIDR, e.g. "203.0.113.0/24".`);
  }
  const everyone = allowed.filter(cidr => cidr.endsWith('/0'));
  if (everyone.length) {
    warnings.push(`${at('dashboard_allow')}: ${everyone.map(c => `"${c}"`).join(' and ')} allow${everyone.length === 1 ? 's' : ''} every address, so the dashboard is public. List only the networks that need it, e.g. "203.0.113.0/24".`);
  }
  const backup = m.backup as { keep: number };
  if (backup.keep < 1) problems.push(`${at('backup.keep')}: must be at least 1; the last good backup is never deleted.`);
  const endpoint = typeof m.address === 'string' ? endpointOf(name, m, base, ssh) : undefined;
  if (problems.length > before || !endpoint) return undefined;
  // The firewall cannot filter ports Docker publishes (its NAT rules come before ufw's INPUT), so
  // with firewall = true they are published on loopback only, as with domains (compose.ts).
  if (m.firewall && !domains && !['0.0.0.0', '127.0.0.1'].includes(m.bind_address as string)) {
    warnings.push(`${at('bind_address')}: ${m.bind_address} is not used: with firewall = true ports 3210, 3211 and 6791 are published on 127.0.0.1 only (reach them through an SSH tunnel).`);
  }

  const local = (p: unknown) => (typeof p === 'string' ? resolveLocalPath(p, base) : undefined);
  return {
    ...endpoint,
    volume: (m.volume as string).replace(/\/+$/, ''),
    root: (m.root as string).replace(/\/+$/, ''),
    instance_name: instance,
    backend_image: m.backend_image as string,
    dashboard_image: m.dashboard_image as string,
    bind_address: domains || m.firewall ? '127.0.0.1' : (m.bind_address as string),
    domains: domains as Domains | undefined,
    dashboard_allow: m.dashboard_allow as string[],
    firewall: m.firewall as boolean,
    acme: { email: acme.email as string | undefined, directory: ACME_DIRECTORIES[directory] ?? directory, ca_bundle: local(acme.ca_bundle) },
    postgres: { ...(pg as unknown as PostgresConfig), ca_file: local(pg.ca_file) },
    backup,
    promote_from: m.promote_from as string | undefined,
  };
}

interface SshContext {
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
function endpointOf(name: string, m: Record<string, unknown>, base: string, ssh: SshContext): Endpoint | undefined {
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

/** Paths are pasted into droplet scripts and configs, so only plain ones; one trailing "/" is
 * tolerated because loading drops it. */
function isPlainAbsolutePath(path: string): boolean {
  const trimmed = path.replace(/(.)\/$/, '$1');
  return /^\/[A-Za-z0-9._/-]+$/.test(trimmed) && trimmed.slice(1).split('/').every(part => part !== '' && part !== '.' && part !== '..');
}

function isHttpsUrl(text: string): boolean {
  if (!/^[\x21-\x7e]+$/.test(text)) return false;
  try {
    const url = new URL(text);
    return url.protocol === 'https:' && url.hostname !== '' && !url.username && !url.password;
  } catch {
    return false;
  }
}

/**
 * A URL as shown in a message, with everything from "://" to the last "@" (user and password,
 * as far as anything can tell in a text that may not even parse) replaced, so an error never
 * echoes a password put in the wrong place.
 */
export function withoutUserinfo(url: string): string {
  const end = url.lastIndexOf('@');
  if (end < 0) return url;
  const scheme = url.indexOf('://');
  const start = scheme >= 0 && scheme < end ? scheme + 3 : 0;
  return `${url.slice(0, start)}…${url.slice(end)}`;
}

/**
 * Query parameters POSTGRES_URL may carry. sslmode only where the backend verifies: Convex's
 * backend (tokio-postgres with rustls) verifies the certificate and the host name of every TLS
 * connection, so `require` is verify-full there; disable, allow and prefer would let it fall
 * back to plain text. convex-ops' own psql and pg_dump always use verify-full.
 */
const CLUSTER_URL_PARAMETERS: Record<string, RegExp> = {
  sslmode: /^(require|verify-full)$/,
  connect_timeout: /^\d{1,4}$/,
  application_name: /^[A-Za-z0-9._-]{1,63}$/,
  target_session_attrs: /^(any|read-write)$/,
};

/** The checks Convex itself makes on POSTGRES_URL, made here before anything is deployed. */
function checkClusterUrl(url: string, at: string, problems: string[]): void {
  const example = 'e.g. "postgresql://db.example.com:25060"';
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    problems.push(`${at}: ${JSON.stringify(withoutUserinfo(url))} is not a URL, ${example}.`);
    return;
  }
  if (!/^postgres(ql)?:$/.test(parsed.protocol)) problems.push(`${at}: must start with postgresql://, ${example}.`);
  if (!parsed.hostname || /\s/.test(url)) problems.push(`${at}: needs a host name and no spaces, ${example}.`);
  if (parsed.hash) problems.push(`${at}: must not contain "#"; remove it and what follows, ${example}.`);
  for (const [name, value] of parsed.searchParams) {
    const allowed = CLUSTER_URL_PARAMETERS[name];
    if (!allowed) {
      problems.push(`${at}: the parameter ${JSON.stringify(name)} is not supported. Use only ${Object.keys(CLUSTER_URL_PARAMETERS).join(', ')}, or none.`);
    } else if (!allowed.test(value)) {
      problems.push(
        name === 'sslmode'
          ? `${at}: sslmode=${JSON.stringify(value)} would allow an unverified or plain-text connection. Use sslmode=verify-full or require (both verify the certificate), or leave it out.`
          : `${at}: ${name}=${JSON.stringify(value)} is not a valid value (${allowed.source}). Fix or remove it.`,
      );
    }
  }
  if (parsed.pathname && parsed.pathname !== '/') {
    problems.push(
      `${at}: contains a database name ("${parsed.pathname}"); Convex refuses it with "cluster url already contains db name: ${parsed.pathname}". ` +
        `Remove the path: Convex picks the database from instance_name.`,
    );
  }
  if (parsed.password) problems.push(`${at}: must not contain a password; put it in the environment variable named by password_env.`);
}

function resolveLocalPath(p: string, base: string): string {
  const path = expandHome(p);
  return isAbsolute(path) ? path : resolve(base, path);
}

function asTable(value: unknown, at: string, problems: string[]): Record<string, unknown> {
  if (value === undefined) return {};
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    problems.push(`${at}: must be a table ([${at}]).`);
    return {};
  }
  return value as Record<string, unknown>;
}

function checkKeys(table: Record<string, unknown>, specs: Record<string, Spec>, at: string, problems: string[]): void {
  for (const [key, value] of Object.entries(table)) {
    const spec = specs[key];
    if (!spec) {
      problems.push(unknownKey(`${at}.${key}`, key, Object.keys(specs)));
      continue;
    }
    const ok =
      spec.type === 'string' ? typeof value === 'string' && value.length > 0
      : spec.type === 'integer' ? Number.isInteger(value)
      : spec.type === 'boolean' ? typeof value === 'boolean'
      : spec.type === 'string[]' ? Array.isArray(value) && value.every(v => typeof v === 'string')
      : typeof value === 'object' && value !== null && !Array.isArray(value);
    if (!ok) {
      problems.push(`${at}.${key}: must be ${spec.type === 'string[]' ? 'a list of strings' : spec.type === 'table' ? 'a table' : `a non-empty ${spec.type}`}.`);
    } else if (spec.type === 'table') {
      checkKeys(value as Record<string, unknown>, spec.keys, `${at}.${key}`, problems);
    }
  }
}

function unknownKey(path: string, key: string, known: string[]): string {
  const best = known
    .map(k => ({ k, d: editDistance(key, k) }))
    .sort((a, b) => a.d - b.d)[0];
  const hint = best && best.d <= Math.max(2, Math.floor(key.length / 3)) ? ` Did you mean "${best.k}"?` : ` Known keys: ${known.join(', ')}.`;
  return `${path}: unknown key.${hint}`;
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let diagonal = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const above = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, diagonal + (a[i - 1] === b[j - 1] ? 0 : 1));
      diagonal = above;
    }
  }
  return row[b.length]!;
}

function deepMerge(target: Record<string, unknown>, source: Record<string, unknown>): Record<string, unknown> {
  for (const [key, value] of Object.entries(source)) {
    const current = target[key];
    if (isTable(value) && isTable(current)) target[key] = deepMerge({ ...current }, value);
    else target[key] = structuredClone(value);
  }
  return target;
}

function isTable(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

/** Resolves --host (names and groups, comma-separated) to hosts; an unknown name lists the known ones. */
export function selectHosts(inventory: Inventory, selector: string | undefined): Host[] {
  if (!selector) {
    throw new InventoryError(`--host is required. Known hosts: ${[...inventory.hosts.keys()].join(', ')}${inventory.groups.size ? `; groups: ${[...inventory.groups.keys()].join(', ')}` : ''}.`);
  }
  const names = new Set<string>();
  for (const part of selector.split(',').map(s => s.trim()).filter(Boolean)) {
    if (inventory.hosts.has(part)) names.add(part);
    else if (inventory.groups.has(part)) inventory.groups.get(part)!.forEach(n => names.add(n));
    else {
      throw new InventoryError(
        `unknown host "${part}" in ${inventory.path}. Known hosts: ${[...inventory.hosts.keys()].join(', ')}` +
          (inventory.groups.size ? `; groups: ${[...inventory.groups.keys()].join(', ')}.` : '.'),
      );
    }
  }
  return [...names].map(n => inventory.hosts.get(n)!);
}

export function databaseName(host: Host): string {
  return host.instance_name.replace(/-/g, '_');
}
