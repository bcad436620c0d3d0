// Restore a backup made by the backup step: verify it, make a safety backup of what is there now
// (the backup step's own code, without rotation), stop the backend (compose stop — never
// `down`, never `-v`), restore the database in one transaction as the role that owns it, swap
// the data and storage folders for the backup's (the old ones kept aside until the backend is
// healthy again), start the backend and wait until it is healthy. restore.ts then runs the checks.
// The database commands are the backup script's own (files/convex-ops-backup.sh), so the
// connection settings and the password handling exist once.
import type { Host } from '../inventory.ts';
import { databaseName } from '../inventory.ts';
import type { Step, StepContext } from '../step.ts';
import { sh } from '../shell.ts';
import { BACKUP_ID, BACKUP_SCRIPT, backupScriptInline, backupsDir, makeBackup } from './backup.ts';
import { fileFact } from '../files.ts';
import { composeCommand, dockerState } from './docker.ts';
import { waitHealthy } from './up.ts';

/** The id given on the command line, checked before anything connects. */
export function restoreUsageProblem(id: unknown): string | undefined {
  if (typeof id !== 'string' || id === '') return '--backup ID is required: the id of a backup in <root>/backups/ (backup.ts --list shows them).';
  if (!BACKUP_ID.test(id)) return `--backup "${id}" is not a backup id; ids are UTC times such as 20261129T031700Z (backup.ts --list shows them).`;
  return undefined;
}

/** Renames within the volume (atomic per folder); on any error, what moved is moved back. */
function swapScript(host: Host, staging: string, aside: string): string {
  return [
    'set -e',
    sh`v=${host.volume}; s=${staging}; a=${aside}`,
    'mkdir -m 700 "$a"',
    'undo() { for f in data storage; do if [ -e "$a/$f" ]; then rm -rf "${v:?}/$f"; mv "$a/$f" "$v/$f"; fi; done; }',
    `trap undo EXIT`,
    'for f in data storage; do',
    '  if [ -e "$v/$f" ]; then mv "$v/$f" "$a/$f"; fi',
    '  if [ -e "$s/$f" ]; then mv "$s/$f" "$v/$f"; else mkdir "$v/$f"; fi',
    'done',
    'trap - EXIT',
    'rmdir "$s"',
  ].join('\n');
}

/**
 * Where data and storage are after a swap that failed: its undo puts the previous folders back,
 * but what it could not move back is still aside. Read, not assumed, so that the message says
 * what is really in place.
 */
async function folderState(ctx: StepContext, aside: string): Promise<string> {
  const folders = `${ctx.host.volume}/{data,storage}`;
  const listing = await ctx
    .run(sh`for f in data storage; do if [ -e ${aside}/"$f" ]; then echo "$f"; fi; done`, 'read the folders', { allowFail: true })
    .then(r => (r.code === 0 ? r.stdout.split('\n').filter(Boolean) : undefined), () => undefined);
  if (!listing) return `the folders could not be read: look at ${folders} and ${aside} before running anything.`;
  if (listing.length === 0) return `the swap was undone, so the folders are the previous ones, which do not belong with that database: run the restore again.`;
  return `the previous ${listing.join(' and ')} could not be moved back and ${listing.length === 1 ? 'is' : 'are'} in ${aside}: look at ${folders} before running anything.`;
}

export function restore(id: string): Step {
  return {
    name: 'restore',
    facts: () => [dockerState, fileFact(BACKUP_SCRIPT)],
    async run(ctx) {
      const { host } = ctx;
      const dir = `${backupsDir(host)}/${id}`;
      ctx.progress(`verifying ${dir}`);
      const verified = await ctx.run(`${backupScriptInline(host, 'verify', id)} 2>&1`, 'verify backup', { allowFail: true });
      if (verified.code !== 0) throw new Error(`${verified.stdout.trim().split('\n').pop()}. Nothing was changed.`);
      // What is there now, so that a restore of the wrong backup, or one that fails half-way, can be undone.
      const safety = await makeBackup(ctx, { before: `the restore of ${id}` });
      const undo = safety ? ` To go back to the state before this restore: restore.ts --backup ${safety.id} --yes (the safety backup).` : '';
      const compose = (await composeCommand(ctx)).split(' ');
      const staging = `${host.volume}/.convex-ops-restore-${id}`;
      const aside = `${host.volume}/.convex-ops-before-restore-${new Date().toISOString().replace(/[-:]/g, '').replace(/\..*/, '')}Z`;
      const startBackend = () => ctx.run(sh`cd ${host.root} && ${compose} up -d`, 'start backend', { onOutput: c => ctx.progress(c) });

      // Unpacked while the backend still runs: the downtime is only the database and the swap.
      await ctx.change(`unpack data and storage of ${id} into ${staging}`, () =>
        ctx.run(sh`rm -rf ${staging} && mkdir -m 700 ${staging} && tar --numeric-owner -xpzf ${`${dir}/data.tar.gz`} -C ${staging}`, 'unpack backup'),
      );
      await ctx.change('stop the backend (compose stop backend)', () => ctx.run(sh`cd ${host.root} && ${compose} stop backend`, 'stop backend'));
      let databaseRestored = false;
      let swapped = false;
      try {
        await ctx.change(`restore database ${databaseName(host)} from ${id} (one transaction, as ${host.postgres.user})`, async () => {
          await ctx.run(backupScriptInline(host, 'restore-database', id), 'pg_restore');
          databaseRestored = true;
        });
        await ctx.change(`swap ${host.volume}/{data,storage} for the backup's (the current ones kept in ${aside} until the backend is healthy)`, async () => {
          await ctx.run(swapScript(host, staging, aside), 'swap folders');
          swapped = true;
        });
        await ctx.change('start the backend and wait until it is healthy', async () => {
          await startBackend();
          await waitHealthy(ctx);
        });
      } catch (error) {
        if (ctx.check) throw error;
        // Never leave the backend stopped: start it again on whatever is in place now.
        const started = await startBackend().then(() => true, () => false);
        const backend = started ? 'The backend was started again.' : `Starting the backend again failed too: run up.ts --host ${host.name}.`;
        const state = swapped
          ? `The database and the folders are now those of ${id}; the previous folders are kept in ${aside}.`
          : databaseRestored
            ? `The database is now that of ${id}, but ${await folderState(ctx, aside)}`
            : `The database restore is one transaction, so the database and the folders are as they were.`;
        throw new Error(`${(error as Error).message}\n${state} ${backend}${undo}`);
      }
      await ctx.change(`remove the previous folders (${aside})`, () => ctx.run(sh`rm -rf ${aside}`, 'remove previous folders'));
    },
  };
}
