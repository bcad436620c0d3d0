// The fleet's inventory, in the product's inventory.toml format, so tests run the scripts
// exactly as a user would: `npx zx scripts/install.ts --host dev --inventory <this file>`.
import fs from 'node:fs/promises';
import path from 'node:path';
import TOML from '@iarna/toml';
import type { Droplet, DropletSpec } from './droplets.ts';
import { domainsFor } from './droplets.ts';
import { FLEET_REGISTRY_HOST } from './images.ts';

export type InventoryObject = Record<string, unknown>;

export const BACKEND_IMAGE_V1 = `${FLEET_REGISTRY_HOST}/convex-backend:v1`;
export const DASHBOARD_IMAGE_V1 = `${FLEET_REGISTRY_HOST}/convex-dashboard:v1`;

export function buildInventory(opts: {
  identityPath: string;
  knownHostsPath: string;
  droplets: Array<{ spec: DropletSpec; droplet: Droplet }>;
  acme?: { directory: string; caBundle: string };
}): InventoryObject {
  const hosts: Record<string, InventoryObject> = {};
  for (const { spec, droplet } of opts.droplets) {
    const host: InventoryObject = { address: droplet.ip };
    if (droplet.user !== 'root') host.user = droplet.user;
    if (droplet.volumePath) host.volume = droplet.volumePath;
    if (spec.promoteFrom) host.promote_from = spec.promoteFrom;
    if (spec.domains) {
      host.domains = domainsFor(spec.name);
      if (opts.acme) {
        host.acme = { email: `ops@${spec.name}.test`, directory: opts.acme.directory, ca_bundle: opts.acme.caBundle };
      }
    }
    hosts[spec.name] = host;
  }
  return {
    defaults: {
      user: 'root',
      port: 22,
      identity: opts.identityPath,
      known_hosts: opts.knownHostsPath,
      root: '/opt/convex',
      instance_name: 'convex-self-hosted',
      backend_image: BACKEND_IMAGE_V1,
      dashboard_image: DASHBOARD_IMAGE_V1,
      postgres: { mode: 'local' },
    },
    hosts,
    groups: { all: opts.droplets.map(({ spec }) => spec.name) },
  };
}

const isPlainObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Date);

/**
 * `base` with `overrides` merged in: tables merge key by key, anything else (arrays too)
 * replaces, and a key set to `undefined` or `null` is removed, so a test can write an
 * inventory that lacks a field.
 */
export function deepMerge(base: InventoryObject, overrides: InventoryObject): InventoryObject {
  const merged: InventoryObject = { ...base };
  for (const [key, value] of Object.entries(overrides)) {
    if (value === undefined || value === null) delete merged[key];
    else if (isPlainObject(value) && isPlainObject(merged[key])) merged[key] = deepMerge(merged[key], value);
    else merged[key] = value;
  }
  return merged;
}

export async function writeInventoryFile(file: string, inventory: InventoryObject): Promise<string> {
  await fs.mkdir(path.dirname(file), { recursive: true });
  await fs.writeFile(file, `# Written by the convex-ops test fleet (test/fleet/).\n${TOML.stringify(inventory as TOML.JsonMap)}`);
  return file;
}
