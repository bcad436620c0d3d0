// inventory.toml: loaded, merged ([defaults] under each host) and validated before anything
// connects. Errors carry the key's path (hosts.dev.postgres.url) and say how to fix it.
// The file's shape and defaults are in inventory/schema.ts, what its values mean in
// inventory/validate.ts.
import { readFileSync } from 'node:fs';
import TOML from '@iarna/toml';
import { validateInventory } from './inventory/validate.ts';
import type { ValidateOptions } from './inventory/validate.ts';
import type { Settings } from './backend-settings.ts';
import type { StorageConfig } from './storage.ts';

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
/** restic's SFTP target, as the droplet logs in to it. */
export interface SftpTarget { user: string; host: string; port: number; path: string }
/** Off-host copies of the backups ([backup] repository…), checked by inventory/offsite.ts. */
export interface OffsiteConfig {
  /** A restic repository URL: sftp:, rest:, s3:, b2:, azure:, gs:, swift: or rclone:. */
  repository: string;
  /** The operator-side environment variable that holds the repository password. */
  password_env: string;
  /** Operator-side variables passed to restic under their own names (S3 and the like). */
  credentials_env: string[];
  keep_daily: number;
  keep_weekly: number;
  keep_monthly: number;
  /** An inventory host the tool prepares as the SFTP target. */
  repository_host?: string;
  /** Where the droplet logs in, for an sftp: repository. */
  sftp?: SftpTarget;
}
export interface BackupConfig { keep: number; offsite?: OffsiteConfig }
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
  backup: BackupConfig;
  promote_from?: string;
  /** [backend_env] and [dashboard_env]: environment variables of the containers, names checked. */
  backend_env?: Settings;
  dashboard_env?: Settings;
  /** [storage]: local (none given) or S3, whole. */
  storage?: StorageConfig;
}
export interface Inventory { path: string; hosts: Map<string, Host>; groups: Map<string, string[]>; warnings: string[] }

export class InventoryError extends Error {}

// Steps name files after hosts, with the same rule.
export { NAME } from './inventory/schema.ts';

export function defaultInventoryPath(): string {
  return process.env.CONVEX_OPS_INVENTORY ?? 'inventory.toml';
}

export function loadInventory(path: string, options: ValidateOptions = {}): Inventory {
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
  const validated = validateInventory(data, path, options);
  const problems = validated.problems;
  if (problems) throw new InventoryError(`${path}: ${problems.length === 1 ? problems[0] : '\n  - ' + problems.join('\n  - ')}`);
  return validated.inventory;
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
