// The data volume's folders, and the root symlink (/opt/convex → the volume) the guide sets up.
import type { Host } from '../inventory.ts';
import type { Step } from '../step.ts';
import type { Change } from '../plan.ts';
import { phase } from '../plan.ts';
import { pathKindFact } from '../files.ts';
import type { PathKind } from '../files.ts';
import { sh } from '../shell.ts';

export const VOLUME_FOLDERS = ['data', 'storage', 'logs', 'backups', 'config'];

const folders = (host: Host) => VOLUME_FOLDERS.map(f => `${host.volume}/${f}`);

/** What the volume, the root and the folders must be; throws when fixing it would need a guess. */
export function planDirectories(facts: { volume: PathKind; root: PathKind; folders: PathKind[] }, host: Host): Change[] {
  const { volume, root } = facts;
  if (volume === 'absent') {
    throw new Error(`the volume ${host.volume} does not exist. Attach and mount the volume (or create the directory), then run again; nothing was changed.`);
  }
  if (volume !== 'dir') {
    throw new Error(`the volume ${host.volume} is not a directory (${volume}). Fix hosts.${host.name}.volume; nothing was changed.`);
  }
  if (root !== 'absent' && root !== `link:${host.volume}`) {
    const what = root.startsWith('link:') ? `a symlink to ${root.slice(5)}` : `a ${root}`;
    throw new Error(
      `${host.root} is ${what}, not a symlink to the volume ${host.volume}. Move its contents onto the volume and remove it, or set hosts.${host.name}.root; nothing was changed.`,
    );
  }
  const changes: Change[] = [];
  const missing = folders(host).filter((_, i) => facts.folders[i] === 'absent');
  if (missing.length) changes.push({ label: `create ${missing.join(', ')}`, script: sh`mkdir -p ${missing}` });
  if (root === 'absent') {
    // ln to a temporary name and rename: the link appears whole or not at all.
    changes.push({
      label: `link ${host.root} → ${host.volume}`,
      script: sh`mkdir -p "$(dirname ${host.root})" && ln -sfn ${host.volume} ${host.root + '.convex-ops-new'} && mv -T ${host.root + '.convex-ops-new'} ${host.root}`,
    });
  }
  return changes;
}

export const directories: Step = {
  name: 'directories',
  phases: [
    phase({
      facts: (host: Host) => ({ volume: pathKindFact(host.volume), root: pathKindFact(host.root), folders: folders(host).map(pathKindFact) }),
      plan: planDirectories,
      ok: (_, host) => `${host.root} → ${host.volume} with ${VOLUME_FOLDERS.join(', ')}`,
    }),
  ],
};
