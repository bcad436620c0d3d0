#!/usr/bin/env zx
// Puts a backup back: verify, stop the backend, restore the database and the data and storage
// folders, start, wait until healthy, then run the checks.
import { commandLine, fail, loadHosts, runScript } from './lib/cli.ts';
import { restoreSteps, restoreUsageProblem } from './lib/steps/restore.ts';
import { allChecks } from '../checks/index.ts';

const spec = {
  script: 'restore',
  summary: 'Restores a backup made by backup.ts: stops the backend, restores the database and the data, starts it and runs the checks.',
  extraHelp: `
  --backup ID           the backup to restore (an id from backup.ts --list), required
  --yes                 confirm: the database and data are replaced by the backup's, required
`,
  booleans: ['yes'],
  strings: ['backup'],
};
const args = commandLine(spec);
const problem = restoreUsageProblem(args.backup);
if (problem) fail(`${problem} Nothing was changed.`);
if (!args.yes && !args.check) {
  fail(`restore.ts replaces the database and the data of --host ${args.host ?? 'HOST'} with backup ${args.backup}: everything written since is lost. Add --yes to go ahead. Nothing was changed.`);
}
if (loadHosts(args).hosts.length !== 1) fail('restore.ts restores one host at a time: give a single host to --host. Nothing was changed.');

await runScript({
  ...spec,
  steps: (_host, run) => restoreSteps(String(run.args.backup)),
  checks: () => allChecks,
});
