// Maintenance mode: while a flag file exists, nginx answers the api and site names with 503, a
// Retry-After header and a short JSON body (files/nginx-site.conf), instead of the 502 a stopped
// backend would give. nginx looks for the file on every request, so switching is creating or
// removing one file: atomic, and no reload. A promotion's window turns it on with a pending
// handler armed, so a run killed inside the window leaves it to the next run (the nginx step)
// to turn off; an operator's `all.ts --maintenance on` is deliberate and stays on until
// `--maintenance off`.
import type { Host } from '../inventory.ts';
import type { Step } from '../step.ts';
import { STATE_DIR, memoKey, pendingHandlers } from '../step.ts';
import type { FileState, PathKind } from '../files.ts';
import { fileFact, pathKindFact } from '../files.ts';
import type { Change, Handler } from '../plan.ts';
import { phase, skip, withHandler } from '../plan.ts';
import { lines, sh } from '../shell.ts';
import { sitePath } from './nginx.ts';

/** The flag nginx looks for; per instance, as the site file is. */
export const maintenanceFlag = (host: Host) => `${STATE_DIR}/maintenance/${host.instance_name}`;

/** The pending handler a promotion arms when it turns maintenance on: the off switch, for the next run if this one dies. */
export const MAINTENANCE_OFF = 'maintenance-off';

/** When maintenance went on and off, by the droplet's clock (seconds since the epoch). */
export const MAINTENANCE_ON_AT = memoKey<number>('maintenance-on-at');
export const MAINTENANCE_OFF_AT = memoKey<number>('maintenance-off-at');

/** The droplet's clock, printed by a change's script for its after() to read (parseTime). */
export const NOW = sh`date +%s.%N`;
export const parseTime = (stdout: string) => Number(/(\d+\.\d+)\s*$/.exec(stdout)?.[1] ?? NaN);

export function maintenanceOffHandler(host: Host): Handler {
  return {
    name: MAINTENANCE_OFF,
    label: 'maintenance off (nginx serves the backend again)',
    script: lines(sh`rm -f ${maintenanceFlag(host)}`, NOW),
    after: (stdout, memo) => memo.set(MAINTENANCE_OFF_AT, parseTime(stdout)),
  };
}

/** Whether the host's live nginx site answers 503 while the flag exists (a site written before this feature does not). */
export function siteHonoursMaintenance(site: FileState, host: Host): boolean {
  return site.kind === 'file' && site.content.includes(maintenanceFlag(host));
}

export interface MaintenanceFacts {
  site: FileState;
  flag: PathKind;
  pending: string[];
}

/** The refusal when maintenance cannot be switched on this host; nothing when it can. */
export function maintenanceProblem(site: FileState, host: Host): string | undefined {
  if (!host.domains) return undefined;
  if (siteHonoursMaintenance(site, host)) return undefined;
  return `${sitePath(host)} does not know maintenance mode yet (it was written by an older convex-ops, or is missing): run all.ts --host ${host.name} first; nothing was changed.`;
}

/** Maintenance on: the flag created (atomically: a rename); with `pending`, the handler that turns it off armed first. */
export function planMaintenanceOn(facts: MaintenanceFacts, host: Host, opts: { pending: boolean }): Change[] {
  if (!host.domains) skip(`hosts.${host.name} has no [domains]: there is no nginx in front of the backend to answer for it`);
  const problem = maintenanceProblem(facts.site, host);
  if (problem) throw new Error(problem);
  const flag = maintenanceFlag(host);
  const alreadyPending = facts.pending.includes(MAINTENANCE_OFF);
  if (facts.flag === 'file' && (!opts.pending || alreadyPending)) return [];
  return [
    {
      label: `maintenance on (nginx answers ${host.domains.api} and ${host.domains.site} with 503 and Retry-After)`,
      script: lines(sh`mkdir -p -m 755 ${`${STATE_DIR}/maintenance`}`, sh`echo on > ${`${flag}.new`} && mv -f ${`${flag}.new`} ${flag}`, NOW),
      ...(opts.pending ? { arms: MAINTENANCE_OFF } : {}),
      after: (stdout, memo) => memo.set(MAINTENANCE_ON_AT, parseTime(stdout)),
    },
  ];
}

/** Maintenance off: the flag removed, and a pending turn-off cleared. */
export function planMaintenanceOff(facts: MaintenanceFacts, host: Host): Change[] {
  if (!host.domains) skip(`hosts.${host.name} has no [domains]: there is no maintenance mode to turn off`);
  if (facts.flag === 'absent' && !facts.pending.includes(MAINTENANCE_OFF)) return [];
  // The handler's own change, performed now: the same script, and the pending mark cleared.
  return withHandler([], maintenanceOffHandler(host), [MAINTENANCE_OFF]);
}

export const maintenanceFacts = (host: Host) => ({ site: fileFact(sitePath(host)), flag: pathKindFact(maintenanceFlag(host)), pending: pendingHandlers });

/** Maintenance on; `pending`: armed as a pending handler (a promotion), else deliberate (an operator). */
export function maintenanceOn(opts: { pending: boolean }): Step {
  return {
    name: 'maintenance',
    phases: [
      phase({
        facts: maintenanceFacts,
        plan: (facts, host) => planMaintenanceOn(facts, host, opts),
        ok: () => 'maintenance is on already',
      }),
    ],
  };
}

export const maintenanceOff: Step = {
  name: 'maintenance',
  phases: [phase({ facts: maintenanceFacts, plan: planMaintenanceOff, ok: () => 'maintenance is off' })],
};
