#!/usr/bin/env zx
// The runbook. `--host X`: install, then nginx and letsencrypt when X has domains, the firewall
// when X has firewall = true, then every check, on one SSH connection per host.
// `--promote dev:prod`: the images proven on dev go to prod by digest, in a short measured window
// behind nginx's maintenance answer, with an exact backup and a rollback if prod fails
// (scripts/lib/promotion/runbook.ts). `--maintenance on|off --host X`: that answer on its own.
import { commandLine, EXIT, fail, loadHosts, runScript } from './lib/cli.ts';
import { allSteps, rollbackSteps } from './lib/runbooks.ts';
import { restoreUsageProblem } from './lib/steps/restore.ts';
import { closeWindow, rollbackWindowCheck, windowGuard } from './lib/steps/window-record.ts';
import { promote } from './lib/promotion/runbook.ts';
import { promotionGuard } from './lib/steps/promotion.ts';
import { maintenanceOff, maintenanceOn } from './lib/steps/maintenance.ts';
import { allChecks } from '../checks/index.ts';

const spec = {
  script: 'all',
  summary:
    'Converges hosts: install, nginx and letsencrypt (with domains), the firewall (firewall = true), then every check.\n' +
    'With --promote: proves images on one host and promotes the very same digests to another, with a backup and a rollback.',
  extraHelp: `
Promotion (instead of --host):
  --promote SRC:DST     e.g. dev:prod: converge SRC to the candidate, check it; pull SRC's
                        digests on DST; then DST's window: maintenance on, backend stopped,
                        backup, the candidate started, maintenance off (measured, printed);
                        then DST converged and checked. On failure DST goes back to its previous
                        images, restored from that backup if the candidate migrated the database
  --promote DST         the same, with SRC from DST's promote_from
  --backend-image REF   the candidate backend (default: SRC's backend_image)
  --dashboard-image REF the candidate dashboard (default: SRC's dashboard_image)
  --yes                 do not ask for confirmation (required when not interactive)
  --no-backup-window    back DST up while it still serves, before the window (a shorter window);
                        the backup may then miss writes, so a candidate that migrated the
                        database is not rolled back (--rollback-window is named instead)
  --keep-inventory      do not pin DST's images in the inventory after a promotion
  --allow-rollback      let a run put back the images a promotion replaced
  --rollback-window ID  with --host and --yes: a promotion that ended (killed, cut off) after
                        its candidate started left its window open, and every run refuses; this
                        restores the window's backup ID and starts the images the host ran
                        before, behind maintenance, then closes the window. What was written
                        since that backup is lost. (To keep the candidate instead: pin its
                        digests in the inventory and run all.ts --host.)
  --show                print the admin key

Maintenance (with --host; hosts with domains):
  --maintenance on|off  nginx answers the api and site names with 503, Retry-After and a short
                        JSON body (on), or serves the backend again (off); nothing else changes
`,
  booleans: ['show', 'yes', 'keep-inventory', 'allow-rollback'],
  strings: ['promote', 'backend-image', 'dashboard-image', 'maintenance', 'rollback-window'],
};

const args = commandLine(spec);
if (args.promote !== undefined) {
  if (args.host) {
    process.stderr.write('error: give either --host (converge) or --promote (promotion), not both.\n');
    process.exit(EXIT.failed);
  }
  process.exit(await promote(args));
}

if (args.maintenance !== undefined) {
  if (args.maintenance !== 'on' && args.maintenance !== 'off') {
    process.stderr.write(`error: --maintenance "${args.maintenance}": use --maintenance on or --maintenance off (with --host). Nothing was changed.\n`);
    process.exit(EXIT.failed);
  }
  // An operator's switch is deliberate: it stays on until --maintenance off (no pending handler).
  await runScript({ ...spec, steps: () => [args.maintenance === 'on' ? maintenanceOn({ pending: false }) : maintenanceOff] });
}

const rollbackWindow = args['rollback-window'];
if (rollbackWindow !== undefined) {
  const problem = restoreUsageProblem(rollbackWindow, '--rollback-window');
  if (problem) fail(`${problem} Nothing was changed.`);
  if (!args.yes && !args.check) fail(`--rollback-window replaces the database and the data of --host ${args.host ?? 'HOST'} with backup ${rollbackWindow}: everything written since is lost. Add --yes to go ahead. Nothing was changed.`);
  if (loadHosts(args).hosts.length !== 1) fail('--rollback-window rolls back one host at a time: give a single host to --host. Nothing was changed.');
  await runScript({ ...spec, steps: (host, run) => [rollbackWindowCheck(String(rollbackWindow)), ...rollbackSteps(host, run, String(rollbackWindow))], checks: () => allChecks });
}

await runScript({
  ...spec,
  // The window's guard first: it refuses while a killed promotion's candidate may have migrated
  // the database; the window is closed once the run has converged past it.
  steps: (host, run) => [windowGuard, promotionGuard(Boolean(run.args['allow-rollback'])), ...allSteps(host, run), closeWindow('all.ts converged the host')],
  checks: () => allChecks,
});
