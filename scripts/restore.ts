#!/usr/bin/env zx
// Puts a backup back: verify, stop the backend, restore the database and the data and storage
// folders, start, wait until healthy, then run the checks. With --from-repository, the disaster
// recovery drill: on a fresh droplet, a snapshot of the off-host repository is fetched, its .env
// put in place, the install run, and the snapshot's backup restored the same way.
import { commandLine, fail, loadHosts, runScript } from './lib/cli.ts';
import { runOffsite } from './lib/offsite-runbook.ts';
import { installSteps } from './lib/runbooks.ts';
import { restoreSteps, restoreUsageProblem } from './lib/steps/restore.ts';
import { directories } from './lib/steps/directories.ts';
import { offsiteOf } from './lib/steps/offsite.ts';
import { FETCHED_BACKUP, fetchSnapshot, snapshotUsageProblem } from './lib/steps/recovery.ts';
import { allChecks } from '../checks/index.ts';

const spec = {
  script: 'restore',
  summary:
    'Restores a backup made by backup.ts: stops the backend, restores the database and the data, starts it and runs the checks.\n' +
    'With --from-repository: rebuilds the instance from the off-host repository, on a fresh droplet (install, .env, database, data).',
  extraHelp: `
  --backup ID           the backup to restore (an id from backup.ts --list)
  --from-repository     instead: fetch a snapshot from [backup] repository, put its .env in place, run the
                        install, then restore its backup (a fresh droplet rebuilt after a disaster)
  --snapshot ID|latest  with --from-repository: the snapshot (default latest: the instance's newest)
  --force-replace       with --from-repository: replace an instance already on the droplet (another INSTANCE_SECRET)
  --yes                 confirm: the database and data are replaced by the backup's, required
`,
  booleans: ['yes', 'from-repository', 'force-replace'],
  strings: ['backup', 'snapshot'],
};
const args = commandLine(spec);
const fromRepository = Boolean(args['from-repository']);
const problem = fromRepository
  ? args.backup !== undefined
    ? '--backup and --from-repository exclude each other: --backup restores a backup on the droplet, --from-repository one fetched from the repository.'
    : snapshotUsageProblem(args.snapshot ?? 'latest')
  : restoreUsageProblem(args.backup);
if (problem) fail(`${problem} Nothing was changed.`);
const what = fromRepository ? `snapshot ${args.snapshot ?? 'latest'} of the off-host repository` : `backup ${args.backup}`;
if (!args.yes && !args.check) {
  fail(`restore.ts replaces the database and the data of --host ${args.host ?? 'HOST'} with ${what}: everything written since is lost. Add --yes to go ahead. Nothing was changed.`);
}
if (loadHosts(args).hosts.length !== 1) fail('restore.ts restores one host at a time: give a single host to --host. Nothing was changed.');

if (!fromRepository) {
  await runScript({ ...spec, steps: () => restoreSteps(String(args.backup)), checks: () => allChecks });
}

await runOffsite(
  args,
  'restore',
  async (session, pinned, run) => {
    if (!(await session.run([directories, fetchSnapshot(String(args.snapshot ?? 'latest'), pinned, Boolean(args['force-replace']))]))) return;
    // A dry run fetched nothing: what follows depends on the snapshot.
    const id = session.memo.get(FETCHED_BACKUP);
    if (!id) return;
    if (!(await session.run(installSteps(session.host, run)))) return;
    if (!(await session.run(restoreSteps(id)))) return;
    await session.checks(allChecks);
  },
  // A host without a repository has nothing to recover from.
  async session => void offsiteOf(session.host),
);
