// What the inventory's values mean, checked before anything connects: each host's merged table
// ([defaults] under [hosts.NAME]) goes through the rules below, and the groups and promote_from
// must name hosts that exist. Every problem carries its key's path and says how to fix it.
import { dirname, resolve } from 'node:path';
import { isIP } from 'node:net';
import type { Domains, Host, Inventory, PostgresConfig } from '../inventory.ts';
import { ACME_DIRECTORIES, asTable, checkKeys, controlCharacterProblems, deepMerge, DEFAULTS, DOMAIN_KEYS, HOST_KEYS, NAME, resolveLocalPath, shown, TOP_KEYS, unknownKey } from './schema.ts';
import { endpointOf, resolveJumps, sshContext } from './ssh.ts';
import { offsiteConfig, repositoryHostProblem } from './offsite.ts';
import type { SshContext } from './ssh.ts';
import { checkSettings } from '../backend-settings.ts';
import type { Settings } from '../backend-settings.ts';
import { checkStorage } from '../storage.ts';
import type { StorageConfig } from '../storage.ts';

export interface ValidateOptions {
  /** --allow-unknown-env: names in [backend_env] and [dashboard_env] that no image is known to read pass. */
  allowUnknownEnv?: boolean;
}

export type Validated = { inventory: Inventory; problems?: undefined } | { inventory?: undefined; problems: string[] };

/** The inventory from the parsed file, or every problem found in it. */
export function validateInventory(data: Record<string, unknown>, path: string, options: ValidateOptions = {}): Validated {
  const problems: string[] = [];
  const warnings: string[] = [];
  // First and alone: the other messages quote values, which must not carry a control character.
  controlCharacterProblems(data, '', problems);
  if (problems.length) return { problems };
  for (const key of Object.keys(data)) {
    if (!TOP_KEYS.includes(key)) problems.push(unknownKey(key, key, TOP_KEYS));
  }
  const defaults = asTable(data.defaults, 'defaults', problems);
  checkKeys(defaults, HOST_KEYS, 'defaults', problems);
  const hostTables = asTable(data.hosts, 'hosts', problems);
  if (Object.keys(hostTables).length === 0) problems.push(`hosts: no host is defined. Add a [hosts.NAME] table with address and volume.`);

  const base = dirname(resolve(path));
  const hosts = new Map<string, Host>();
  const ssh = sshContext(problems, warnings);
  for (const [name, raw] of Object.entries(hostTables)) {
    if (!NAME.test(name)) {
      problems.push(`hosts.${shown(name)}: ${shown(name)} is not a host name. Use letters, digits, "-" and "_", starting with a letter or digit, e.g. [hosts.prod-eu].`);
      continue;
    }
    const table = asTable(raw, `hosts.${name}`, problems);
    checkKeys(table, HOST_KEYS, `hosts.${name}`, problems);
    const merged = deepMerge(deepMerge(structuredClone(DEFAULTS), defaults), table) as Record<string, unknown>;
    const host = toHost({ name, m: merged, at: key => `hosts.${name}.${key}`, options }, base, { problems, warnings }, ssh);
    if (host) hosts.set(name, host);
  }
  resolveJumps(hosts, ssh);
  const groups = groupsOf(asTable(data.groups, 'groups', problems), Object.keys(hostTables), problems);
  for (const host of hosts.values()) {
    if (host.promote_from && !hosts.has(host.promote_from)) {
      problems.push(`hosts.${host.name}.promote_from: "${host.promote_from}" is not a host. Known hosts: ${[...hosts.keys()].join(', ')}.`);
    }
    const target = repositoryHostProblem(host.name, host.backup.offsite, [...hosts.keys()]);
    if (target) problems.push(target);
  }
  return problems.length ? { problems } : { inventory: { path, hosts, groups, warnings } };
}

function groupsOf(tables: Record<string, unknown>, hostNames: string[], problems: string[]): Map<string, string[]> {
  const groups = new Map<string, string[]>();
  for (const [group, members] of Object.entries(tables)) {
    if (!NAME.test(group)) {
      problems.push(`groups.${shown(group)}: ${shown(group)} is not a group name. Use letters, digits, "-" and "_", starting with a letter or digit, e.g. web-eu = ["dev", "prod"].`);
      continue;
    }
    if (!Array.isArray(members) || members.some(m => typeof m !== 'string')) {
      problems.push(`groups.${group}: must be a list of host names, e.g. ${group} = ["dev", "prod"].`);
      continue;
    }
    for (const member of members as string[]) {
      if (!hostNames.includes(member)) problems.push(`groups.${group}: ${JSON.stringify(member)} is not a host. Known hosts: ${hostNames.join(', ')}.`);
    }
    if (hostNames.includes(group)) problems.push(`groups.${group}: a group cannot have the name of a host.`);
    groups.set(group, members as string[]);
  }
  return groups;
}

/** What the rules found: problems stop the run before it connects, warnings are shown. */
interface Findings { problems: string[]; warnings: string[] }

/** One host's merged table, the path of one of its keys (hosts.dev.port), its name, and the run's options. */
interface HostTable { name: string; m: Record<string, unknown>; at: (key: string) => string; options: ValidateOptions }

/** A rule on one host's merged table. */
type HostRule = (host: HostTable, found: Findings) => void;

const required: HostRule = ({ name, m, at }, { problems }) => {
  for (const key of ['address', 'volume', 'backend_image', 'dashboard_image']) {
    if (m[key] === undefined) problems.push(`${at(key)}: required key is missing. Set it in [hosts.${name}] or [defaults].`);
  }
};

const instanceName: HostRule = ({ m, at }, { problems }) => {
  const instance = String(m.instance_name);
  if (!/^[a-z][a-z0-9-]{0,62}$/.test(instance) || instance.endsWith('-')) {
    problems.push(
      `${at('instance_name')}: "${instance}" cannot become a PostgreSQL database name (Convex uses the name with "-" replaced by "_"). ` +
        `Use lowercase letters, digits and "-", starting with a letter, at most 63 characters, e.g. "convex-self-hosted".`,
    );
  }
};

const paths: HostRule = ({ m, at }, { problems }) => {
  for (const key of ['volume', 'root']) {
    const value = m[key];
    if (typeof value === 'string' && !isPlainAbsolutePath(value)) {
      problems.push(
        `${at(key)}: ${JSON.stringify(value)} must be an absolute path below / made of letters, digits, ".", "_", "-" and single "/" ` +
          `(no empty, "." or ".." parts), e.g. "/mnt/convex_data".`,
      );
    }
  }
};

const bindAddress: HostRule = ({ m, at }, { problems }) => {
  if (typeof m.bind_address === 'string' && !isIP(m.bind_address)) {
    problems.push(`${at('bind_address')}: ${JSON.stringify(m.bind_address)} is not an IP address. Use one of the droplet's addresses, e.g. "0.0.0.0" (all) or "127.0.0.1".`);
  }
};

const images: HostRule = ({ m, at }, { problems, warnings }) => {
  for (const key of ['backend_image', 'dashboard_image']) {
    const value = m[key];
    if (typeof value !== 'string') continue;
    if (!isPinnedImage(value)) {
      problems.push(`${at(key)}: "${value}" must name an image with a tag or digest, e.g. ghcr.io/get-convex/convex-backend:<git sha> or …@sha256:<digest>.`);
    } else if (value.endsWith(':latest')) {
      warnings.push(`${at(key)}: ":latest" moves without notice, so promotion cannot guarantee that prod runs what dev ran. Pin a tag or a digest.`);
    }
  }
};

const promoteFrom: HostRule = ({ name, m, at }, { problems }) => {
  if (m.promote_from === name) problems.push(`${at('promote_from')}: a host cannot promote from itself.`);
};

const postgres: HostRule = ({ m, at }, { problems }) => {
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
};

const domains: HostRule = ({ m, at }, { problems }) => {
  const domains = m.domains as Record<string, unknown> | undefined;
  if (!domains) return;
  for (const key of Object.keys(DOMAIN_KEYS)) {
    const value = domains[key];
    if (typeof value !== 'string') problems.push(`${at('domains.' + key)}: required when [domains] is set.`);
    else if (!/^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$/.test(value)) problems.push(`${at('domains.' + key)}: "${value}" is not a domain name.`);
  }
};

const acme: HostRule = ({ m, at }, { problems }) => {
  const acme = m.acme as Record<string, unknown>;
  if (m.domains && typeof acme.email !== 'string') problems.push(`${at('acme.email')}: required when the host has domains (Let's Encrypt needs a contact address).`);
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
};

const dashboardAllow: HostRule = ({ m, at }, { problems, warnings }) => {
  const allowed = (m.dashboard_allow as string[]) ?? [];
  for (const cidr of allowed) {
    if (!/^[0-9a-fA-F.:]+(\/\d{1,3})?$/.test(cidr)) problems.push(`${at('dashboard_allow')}: ${JSON.stringify(cidr)} is not an address or CIDR, e.g. "203.0.113.0/24".`);
  }
  const everyone = allowed.filter(cidr => cidr.endsWith('/0'));
  if (everyone.length) {
    warnings.push(`${at('dashboard_allow')}: ${everyone.map(c => `"${c}"`).join(' and ')} allow${everyone.length === 1 ? 's' : ''} every address, so the dashboard is public. List only the networks that need it, e.g. "203.0.113.0/24".`);
  }
};

const numbers: HostRule = ({ m, at }, { problems }) => {
  if ((m.backup as { keep: number }).keep < 1) problems.push(`${at('backup.keep')}: must be at least 1; the last good backup is never deleted.`);
};

/** [backend_env] and [dashboard_env]: replaced in the merged table by the settings they hold. */
const settings: HostRule = ({ m, at, options }, found) => {
  for (const key of ['backend_env', 'dashboard_env'] as const) {
    if (m[key] === undefined) continue;
    const checked = checkSettings(m[key] as Record<string, unknown>, key === 'backend_env' ? 'backend' : 'dashboard', at(key), Boolean(options.allowUnknownEnv));
    found.problems.push(...checked.problems);
    found.warnings.push(...checked.warnings);
    m[key] = checked.settings;
  }
};

/** [storage]: replaced in the merged table by the StorageConfig it makes, when it is whole. */
const storage: HostRule = ({ m, at }, { problems }) => {
  if (m.storage !== undefined) m.storage = checkStorage(m.storage as Record<string, unknown>, at('storage'), problems);
};

/** In the order their messages are listed. */
const HOST_RULES: HostRule[] = [required, instanceName, paths, bindAddress, images, promoteFrom, postgres, domains, acme, dashboardAllow, numbers, settings, storage];

function toHost(table: HostTable, base: string, found: Findings, ssh: SshContext): Host | undefined {
  const { name, m } = table;
  const before = found.problems.length;
  for (const rule of HOST_RULES) rule(table, found);
  // Port, user and identity may come from the ssh config, so they are checked once looked up there.
  const endpoint = typeof m.address === 'string' ? endpointOf(name, m, base, ssh) : undefined;
  if (found.problems.length > before || !endpoint) return undefined;
  // The firewall cannot filter ports Docker publishes (its NAT rules come before ufw's INPUT), so
  // with firewall = true they are published on loopback only, as with domains (compose.ts).
  if (m.firewall && !m.domains && !['0.0.0.0', '127.0.0.1'].includes(m.bind_address as string)) {
    found.warnings.push(`${table.at('bind_address')}: ${m.bind_address} is not used: with firewall = true ports 3210, 3211 and 6791 are published on 127.0.0.1 only (reach them through an SSH tunnel).`);
  }
  const offsite = offsiteConfig(m.backup as Record<string, unknown>, table.at, found.problems);
  if (found.problems.length > before) return undefined;
  const local = (p: unknown) => (typeof p === 'string' ? resolveLocalPath(p, base) : undefined);
  const acme = m.acme as Record<string, unknown>;
  const pg = m.postgres as Record<string, unknown>;
  return {
    ...endpoint,
    volume: (m.volume as string).replace(/\/+$/, ''),
    root: (m.root as string).replace(/\/+$/, ''),
    instance_name: m.instance_name as string,
    backend_image: m.backend_image as string,
    dashboard_image: m.dashboard_image as string,
    bind_address: m.domains || m.firewall ? '127.0.0.1' : (m.bind_address as string),
    domains: m.domains as Domains | undefined,
    dashboard_allow: m.dashboard_allow as string[],
    firewall: m.firewall as boolean,
    acme: { email: acme.email as string | undefined, directory: ACME_DIRECTORIES[String(acme.directory)] ?? String(acme.directory), ca_bundle: local(acme.ca_bundle) },
    postgres: { ...(pg as unknown as PostgresConfig), ca_file: local(pg.ca_file) },
    backup: { keep: (m.backup as { keep: number }).keep, ...(offsite ? { offsite } : {}) },
    promote_from: m.promote_from as string | undefined,
    backend_env: m.backend_env as Settings | undefined,
    dashboard_env: m.dashboard_env as Settings | undefined,
    storage: m.storage as StorageConfig | undefined,
  };
}

/** An image reference with a tag or a digest (what compose's image: may name). */
export function isPinnedImage(value: string): boolean {
  return /^[a-z0-9][a-z0-9._\-/:]*(@sha256:[a-f0-9]{64})?$/.test(value) && (value.includes('@') || /:[\w][\w.-]*$/.test(value.split('/').pop() ?? ''));
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
function withoutUserinfo(url: string): string {
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
