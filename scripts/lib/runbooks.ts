// Which steps each runbook runs, in order: the base install (scripts/install.ts), and what all.ts adds.
import type { Host } from './inventory.ts';
import type { RunInfo } from './cli.ts';
import type { Step } from './step.ts';
import { directories } from './steps/directories.ts';
import { docker } from './steps/docker.ts';
import { secret } from './steps/secret.ts';
import { postgresStep } from './steps/postgres.ts';
import { compose } from './steps/compose.ts';
import { storage } from './steps/storage.ts';
import { up } from './steps/up.ts';
import { adminKey } from './steps/admin-key.ts';
import { nginx } from './steps/nginx.ts';
import { letsencrypt } from './steps/letsencrypt.ts';
import { firewall } from './steps/firewall.ts';
import { restoreSteps } from './steps/restore.ts';
import { maintenanceOff, maintenanceOn } from './steps/maintenance.ts';
import { closeWindow, windowGuard } from './steps/window-record.ts';

export function adminKeyStep(run: RunInfo): Step {
  return adminKey({ local: run.local, show: Boolean(run.args.show), print: line => process.stdout.write(line + '\n') });
}

export function installSteps(host: Host, run: RunInfo): Step[] {
  // In S3 mode, the buckets are proven (and a switch that would strand local files refused)
  // before the compose file points the backend at them.
  return [directories, docker, secret, postgresStep(host), ...(host.storage?.mode === 's3' ? [storage] : []), compose, up, adminKeyStep(run)];
}

/** What install.ts runs: the install, refused while a promotion's window is open past its candidate's start. */
export function installScriptSteps(host: Host, run: RunInfo): Step[] {
  return [windowGuard, ...installSteps(host, run)];
}

/**
 * What all.ts converges a host to: the install; with domains, nginx and then the certificate
 * (which switches nginx to HTTPS); and the firewall whenever firewall = true, domains or not.
 */
export function allSteps(host: Host, run: RunInfo): Step[] {
  return [...installSteps(host, run), ...(host.domains ? [nginx, letsencrypt] : []), ...(host.firewall ? [firewall] : [])];
}

/**
 * A host put back on the images it ran before a promotion, behind maintenance; from `backup`
 * first when the candidate may have migrated the database. The promotion's own rollback, and
 * all.ts --rollback-window after a promotion killed in its window; either closes the window.
 */
export function rollbackSteps(host: Host, run: RunInfo, backup?: string): Step[] {
  // The compose file names the previous images before the restore starts the backend again.
  const restore = backup ? [compose, ...restoreSteps(backup)] : [];
  return [maintenanceOn({ pending: true }), ...restore, ...allSteps(host, run), maintenanceOff, closeWindow(backup ? `rolled back, restored from ${backup}` : 'rolled back')];
}
