// The shape of inventory.toml: which keys exist, of which type, with which defaults, and the
// checks that need nothing but that shape (unknown keys with "did you mean", types, control
// characters). What the values mean is checked in validate.ts.
import { isAbsolute, resolve } from 'node:path';
import { closest, distance } from 'fastest-levenshtein';
import { expandHome } from '../ssh-config.ts';

type Spec =
  // settings: a table of environment variables, whose names and values backend-settings.ts checks.
  | { type: 'string' | 'integer' | 'boolean' | 'string[]' | 'settings' }
  | { type: 'table'; keys: Record<string, Spec> };

const text: Spec = { type: 'string' };
const integer: Spec = { type: 'integer' };
const table = (keys: Record<string, Spec>): Spec => ({ type: 'table', keys });

export const DOMAIN_KEYS: Record<string, Spec> = { api: text, site: text, dashboard: text };
export const HOST_KEYS: Record<string, Spec> = {
  // How to reach the droplet.
  address: text, port: integer, user: text, identity: text, identity_passphrase_env: text, known_hosts: text, ssh_config: text, jump: text,
  // Where Convex lives on it, what it runs, and who may reach it.
  volume: text, root: text, instance_name: text, backend_image: text, dashboard_image: text,
  bind_address: text, domains: table(DOMAIN_KEYS), dashboard_allow: { type: 'string[]' }, firewall: { type: 'boolean' },
  promote_from: text,
  acme: table({ email: text, directory: text, ca_bundle: text }),
  postgres: table({ mode: text, user: text, url: text, password_env: text, ca_file: text }),
  backup: table({
    keep: integer,
    // Off-host copies with restic (inventory/offsite.ts).
    repository: text, password_env: text, credentials_env: { type: 'string[]' }, repository_host: text,
    keep_daily: integer, keep_weekly: integer, keep_monthly: integer,
  }),
  // Environment variables of the containers.
  backend_env: { type: 'settings' }, dashboard_env: { type: 'settings' },
  // Where files, modules, exports and search indexes live (storage.ts).
  storage: table({
    mode: text, endpoint: text, region: text, force_path_style: { type: 'boolean' },
    exports_bucket: text, snapshot_imports_bucket: text, modules_bucket: text, files_bucket: text, search_bucket: text,
    access_key_env: text, secret_key_env: text,
  }),
};
export const TOP_KEYS = ['defaults', 'hosts', 'groups'];

export const DEFAULTS = {
  root: '/opt/convex',
  instance_name: 'convex-self-hosted',
  bind_address: '0.0.0.0',
  dashboard_allow: [] as string[],
  firewall: false,
  acme: { directory: 'production' },
  postgres: { mode: 'local', user: 'convex' },
  backup: { keep: 7, keep_daily: 7, keep_weekly: 4, keep_monthly: 6 },
};

export const ACME_DIRECTORIES: Record<string, string> = {
  production: 'https://acme-v02.api.letsencrypt.org/directory',
  staging: 'https://acme-staging-v02.api.letsencrypt.org/directory',
};

/** Host and group names become file names (.secrets/<host>.env) and words in droplet files. */
export const NAME = /^[A-Za-z0-9][A-Za-z0-9_-]*$/;

/** A key or value as shown in a message: JSON-quoted when it is not plain, so no control
 * character from the inventory ever reaches the terminal or the log raw. */
export const shown = (text: string) => (NAME.test(text) ? text : JSON.stringify(text));

/**
 * Every string of the inventory, keys included, with the path that leads to it. Values end up
 * in files on the droplet (cron lines, scripts, configs), where a newline starts a new line
 * that the file's reader would obey, so no string may hold a control character.
 */
export function controlCharacterProblems(value: unknown, at: string, problems: string[]): void {
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

export function asTable(value: unknown, at: string, problems: string[]): Record<string, unknown> {
  if (value === undefined) return {};
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    problems.push(`${at}: must be a table ([${at}]).`);
    return {};
  }
  return value as Record<string, unknown>;
}

export function checkKeys(table: Record<string, unknown>, specs: Record<string, Spec>, at: string, problems: string[]): void {
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
      : spec.type === 'settings' ? isTable(value)
      : typeof value === 'object' && value !== null && !Array.isArray(value);
    if (!ok) {
      problems.push(`${at}.${key}: must be ${spec.type === 'string[]' ? 'a list of strings' : spec.type === 'table' || spec.type === 'settings' ? 'a table' : `a non-empty ${spec.type}`}.`);
    } else if (spec.type === 'table') {
      checkKeys(value as Record<string, unknown>, spec.keys, `${at}.${key}`, problems);
    }
  }
}

export function unknownKey(path: string, key: string, known: string[]): string {
  const best = known.length ? closest(key, known) : undefined;
  const hint = best !== undefined && distance(key, best) <= Math.max(2, Math.floor(key.length / 3)) ? ` Did you mean "${best}"?` : ` Known keys: ${known.join(', ')}.`;
  return `${path}: unknown key.${hint}`;
}

/** [defaults] under a host's table: tables merge key by key, anything else the host's wins. */
export function deepMerge(target: Record<string, unknown>, source: Record<string, unknown>): Record<string, unknown> {
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

/** A path on the operator's machine: "~" is the home folder, a relative path is the inventory's folder. */
export function resolveLocalPath(p: string, base: string): string {
  const path = expandHome(p);
  return isAbsolute(path) ? path : resolve(base, path);
}
