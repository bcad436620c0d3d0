// Disks filling up: the data volume, Docker's storage, the root file system.
import type { Host } from '../inventory.ts';
import type { DoctorState } from './facts.ts';
import { Findings } from './rule.ts';
import type { Context, Finding } from './rule.ts';

const size = (bytes: number) => (bytes >= 1024 ** 3 ? `${(bytes / 1024 ** 3).toFixed(1)} GiB` : `${Math.round(bytes / 1024 ** 2)} MiB`);

export function disk(host: Host, state: DoctorState, context: Context): Finding[] {
  const found = new Findings(context.found);
  const seen = new Set<string>();
  for (const usage of state.disks) {
    // The same file system mounted in several places (the volume, /var/lib/docker) is one finding.
    const fs = `${usage.filesystem}:${usage.sizeBytes}`;
    if (seen.has(fs)) continue;
    seen.add(fs);
    const what = usage.path === host.volume ? `the data volume ${host.volume}` : usage.path === '/var/lib/docker' ? "Docker's storage (/var/lib/docker)" : 'the root file system';
    const worst = Math.max(usage.percent, usage.inodesPercent ?? 0);
    const inodes = (usage.inodesPercent ?? 0) > usage.percent;
    if (worst >= 80) {
      found.add(
        `disk-${usage.path}`,
        worst >= 90 ? 'problem' : 'warning',
        `${what} (${usage.mount}) is ${worst >= 98 ? 'full' : worst >= 90 ? 'nearly full' : 'filling up'}: ${worst}% of its ${inodes ? 'inodes' : 'space'} used, ${size(usage.availableBytes)} free; PostgreSQL, the backend and backups fail when it is full`,
        usage.path === host.volume
          ? `free space (old backups in ${host.root}/backups beyond backup.keep, files in ${host.root}/storage you no longer need) or grow the volume`
          : 'free space (docker image prune, journalctl --vacuum-size=200M, apt-get clean) or grow the disk',
      );
    }
  }
  return found.list();
}
