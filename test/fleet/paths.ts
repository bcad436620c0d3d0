// Where the fleet keeps its files. Everything lives under <repo>/.fleet/ (git-ignored),
// so nothing touches the host's own /etc, PostgreSQL or nginx.
import { fileURLToPath } from 'node:url';
import path from 'node:path';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const fleetRoot = path.join(repoRoot, '.fleet');
/** Shared by every fleet and every run: image build scratch, apt .debs, locks. */
export const cacheDir = path.join(fleetRoot, 'cache');
export const aptArchivesDir = path.join(cacheDir, 'apt-archives');
export const locksDir = path.join(cacheDir, 'locks');
export const dockerdLog = path.join(fleetRoot, 'dockerd.log');

export function fleetDir(fleetName: string): string {
  return path.join(fleetRoot, fleetName);
}

/** Docker object names and labels, namespaced per fleet so several fleets share one engine. */
export const FLEET_LABEL = 'convex-ops.fleet';
export const fleetPrefix = (fleetName: string): string => `cxo-${fleetName}`;
