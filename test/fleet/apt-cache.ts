// Reusing the .debs that the product's apt-get downloads on droplets, across droplets and runs.
//
// Droplets must NOT share one /var/cache/apt/archives: apt takes that directory's lock without
// waiting, so two droplets installing at the same moment fail with "Could not get lock
// /var/cache/apt/archives/lock. It is held by process 0" (seen here with parallel fleets).
// Instead each droplet gets its own archives directory, pre-filled with hard links to the shared
// cache's .debs (apt finds them, checks their hashes and skips the download), and when the fleet
// goes down, the .debs it downloaded are linked back into the shared cache.
import fs from 'node:fs/promises';
import path from 'node:path';
import { aptArchivesDir, fleetDir } from './paths.ts';

const fleetAptDir = (fleetName: string): string => path.join(fleetDir(fleetName), 'apt-archives');

/** Link (same filesystem) or, failing that, copy; an existing target wins. */
async function linkOrCopy(from: string, to: string): Promise<void> {
  try {
    await fs.link(from, to);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return;
    if (code !== 'EXDEV' && code !== 'EPERM') throw error;
    await fs.copyFile(from, to, fs.constants.COPYFILE_EXCL).catch((copyError: NodeJS.ErrnoException) => {
      if (copyError.code !== 'EEXIST') throw copyError;
    });
  }
}

const debsIn = async (dir: string): Promise<string[]> =>
  (await fs.readdir(dir).catch(() => [] as string[])).filter((name) => name.endsWith('.deb'));

/** A fresh archives directory for one droplet, holding every .deb of the shared cache. */
export async function prepareDropletAptArchives(fleetName: string, droplet: string): Promise<string> {
  const dir = path.join(fleetAptDir(fleetName), droplet);
  await fs.rm(dir, { recursive: true, force: true });
  await fs.mkdir(path.join(dir, 'partial'), { recursive: true });
  await fs.mkdir(aptArchivesDir, { recursive: true });
  for (const deb of await debsIn(aptArchivesDir)) await linkOrCopy(path.join(aptArchivesDir, deb), path.join(dir, deb));
  return dir;
}

/** Add the .debs the fleet's droplets downloaded to the shared cache, then drop their directories.
 *  Only complete files are there: apt downloads into partial/ and renames when verified. */
export async function harvestFleetAptArchives(fleetName: string): Promise<void> {
  const root = fleetAptDir(fleetName);
  await fs.mkdir(aptArchivesDir, { recursive: true });
  for (const droplet of await fs.readdir(root).catch(() => [] as string[])) {
    const dir = path.join(root, droplet);
    for (const deb of await debsIn(dir)) await linkOrCopy(path.join(dir, deb), path.join(aptArchivesDir, deb));
  }
  await fs.rm(root, { recursive: true, force: true });
}
