// The data volume's folders, and the root symlink (/opt/convex → the volume) the guide sets up.
import type { Host } from '../inventory.ts';
import type { Step } from '../step.ts';
import { pathKindFact } from '../files.ts';
import { sh } from '../shell.ts';

export const VOLUME_FOLDERS = ['data', 'storage', 'logs', 'backups', 'config'];

const folders = (host: Host) => VOLUME_FOLDERS.map(f => `${host.volume}/${f}`);

export const directories: Step = {
  name: 'directories',
  facts: host => [host.volume, host.root, ...folders(host)].map(pathKindFact),
  async run(ctx) {
    const { host } = ctx;
    const volume = await ctx.fact(pathKindFact(host.volume));
    if (volume === 'absent') {
      throw new Error(`the volume ${host.volume} does not exist. Attach and mount the volume (or create the directory), then run again; nothing was changed.`);
    }
    if (volume !== 'dir') {
      throw new Error(`the volume ${host.volume} is not a directory (${volume}). Fix hosts.${host.name}.volume; nothing was changed.`);
    }
    const root = await ctx.fact(pathKindFact(host.root));
    if (root !== 'absent' && root !== `link:${host.volume}`) {
      const what = root.startsWith('link:') ? `a symlink to ${root.slice(5)}` : `a ${root}`;
      throw new Error(
        `${host.root} is ${what}, not a symlink to the volume ${host.volume}. Move its contents onto the volume and remove it, or set hosts.${host.name}.root; nothing was changed.`,
      );
    }
    const missing: string[] = [];
    for (const folder of folders(host)) if ((await ctx.fact(pathKindFact(folder))) === 'absent') missing.push(folder);
    if (missing.length) await ctx.change(`create ${missing.join(', ')}`, () => ctx.run(sh`mkdir -p ${missing}`, 'create folders'));
    if (root === 'absent') {
      // ln to a temporary name and rename: the link appears whole or not at all.
      await ctx.change(`link ${host.root} → ${host.volume}`, () =>
        ctx.run(sh`mkdir -p "$(dirname ${host.root})" && ln -sfn ${host.volume} ${host.root + '.convex-ops-new'} && mv -T ${host.root + '.convex-ops-new'} ${host.root}`, 'link root'),
      );
    }
    return `${host.root} → ${host.volume} with ${VOLUME_FOLDERS.join(', ')}`;
  },
};
