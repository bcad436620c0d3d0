// A promotion's window, recorded on the target while it is open. Only the host outlives a killed
// promotion (SIGKILL, a lost connection, a closed laptop): once the candidate's backend has
// started it may have migrated the database, which the previous images do not understand
// (Convex has no downgrade), and a plain run would put exactly those images back on it. So the
// window writes this record before anything stops, fills in its backup, marks the candidate's
// start before it starts, and a promotion or rollback that completes removes it. While it says
// the candidate started, every run that would start or change the backend refuses
// (windowGuard) and names the two ways out: finish the promotion, or roll it back from the
// window's backup (all.ts --rollback-window).
import type { Host } from '../inventory.ts';
import type { Fact, Step } from '../step.ts';
import { STATE_DIR } from '../step.ts';
import type { Change } from '../plan.ts';
import { phase } from '../plan.ts';
import { lines, script, sh } from '../shell.ts';
import type { Script } from '../shell.ts';
import type { Role } from './promotion.ts';
import { shortDigest as short } from './promotion.ts';

export const windowRecordPath = (host: Host) => `${STATE_DIR}/promotion-window/${host.instance_name}.json`;

/** How far the window got: "candidate-started" from just before the candidate's backend starts. */
export type WindowStage = 'opened' | 'backed-up' | 'candidate-started';
const STAGES: WindowStage[] = ['opened', 'backed-up', 'candidate-started'];

export interface OpenWindow {
  /** When the window opened, by the operator's clock (ISO). */
  opened: string;
  /** The host the candidate was proven on. */
  from: string;
  /** The references the target ran before, and the candidate's digests. */
  previous: Record<Role, string>;
  candidate: Record<Role, string>;
  stage: WindowStage;
  /** The backup a rollback restores; `quiesced`: taken in the window, with the backend stopped. */
  backup?: { id: string; quiesced: boolean };
}

/** The record as read: none, the window, or why it cannot be read (then a window may be open). */
export type WindowRecord = OpenWindow | { unreadable: string } | undefined;

const ABSENT = 3;

export function windowRecordFact(host: Host): Fact<WindowRecord> {
  const path = windowRecordPath(host);
  return {
    key: `promotion-window:${path}`,
    command: lines(sh`[ -e ${path} ] || exit ${ABSENT}`, sh`cat ${path}`),
    parse: (out, code) => (code === ABSENT ? undefined : code !== 0 ? { unreadable: `cat exited ${code}` } : parseWindowRecord(out)),
  };
}

export function parseWindowRecord(text: string): WindowRecord {
  let value: Partial<OpenWindow>;
  try {
    value = JSON.parse(text) as Partial<OpenWindow>;
  } catch (error) {
    return { unreadable: `not JSON: ${(error as Error).message}` };
  }
  const images = (r: unknown) => typeof r === 'object' && r !== null && ['backend', 'dashboard'].every(k => typeof (r as Record<string, unknown>)[k] === 'string');
  if (typeof value.opened !== 'string' || typeof value.from !== 'string' || !images(value.previous) || !images(value.candidate) || !STAGES.includes(value.stage as WindowStage)) {
    return { unreadable: 'not a promotion window record' };
  }
  return value as OpenWindow;
}

const isOpen = (record: WindowRecord): record is OpenWindow => record !== undefined && !('unreadable' in record);

/** The record written atomically (a rename in its folder): `printf` of the quoted parts, `$id` between them when there are two. */
function writeRecordScript(host: Host, parts: string[]): Script {
  const path = windowRecordPath(host);
  const temp = `${path}.new`;
  const write = parts.length === 1 ? sh`printf '%s\\n' ${parts[0]!} > ${temp}` : sh`printf '%s%s%s\\n' ${parts[0]!} "$id" ${parts[1]!} > ${temp}`;
  return lines(sh`mkdir -p -m 755 ${`${STATE_DIR}/promotion-window`} || exit 1`, script`${write} && ${sh`mv -f ${temp} ${path}`} || exit 1`);
}

/** The window recorded as open, before anything stops: what it replaces with what. */
export function planOpenWindow(window: Omit<OpenWindow, 'stage'>, host: Host): Change[] {
  return [
    {
      label: `record the promotion window as open in ${windowRecordPath(host)} (${short(window.previous.backend)} → ${short(window.candidate.backend)})`,
      script: writeRecordScript(host, [JSON.stringify({ ...window, stage: 'opened' })]),
    },
  ];
}

/**
 * The lines a backup in the window ends with: its id (in `$id`) recorded, so that a rollback
 * after a killed run knows which backup to restore.
 */
export function recordWindowBackupScript(window: Omit<OpenWindow, 'stage'>, host: Host): Script {
  const marker = '@@backup-id@@';
  const parts = JSON.stringify({ ...window, stage: 'backed-up', backup: { id: marker, quiesced: true } }).split(marker);
  return writeRecordScript(host, parts);
}

/** Recorded before the candidate's backend starts: from here on the database may be migrated. */
export function planCandidateStarts(host: Host): Change[] {
  const path = windowRecordPath(host);
  return [
    {
      label: `record in ${path} that the candidate starts (from here on it may migrate the database)`,
      script: lines(
        sh`sed 's/"stage":"[a-z-]*"/"stage":"candidate-started"/' ${path} > ${`${path}.new`} || exit 1`,
        sh`grep -q '"stage":"candidate-started"' ${`${path}.new`} && mv -f ${`${path}.new`} ${path} || exit 1`,
      ),
    },
  ];
}

/** The record removed: the window completed, or its rollback did. */
export function planCloseWindow(record: WindowRecord, host: Host, why: string): Change[] {
  if (record === undefined) return [];
  return [{ label: `close the promotion window (${why}): remove ${windowRecordPath(host)}`, script: sh`rm -f ${windowRecordPath(host)}` }];
}

export function closeWindow(why: string): Step {
  return {
    name: 'promotion-window',
    phases: [
      phase({
        facts: (host: Host) => ({ record: windowRecordFact(host) }),
        plan: ({ record }, host) => planCloseWindow(record, host, why),
        ok: () => 'no promotion window open',
      }),
    ],
  };
}

const runsImages = (host: Host, images: Record<Role, string>) => host.backend_image === images.backend && host.dashboard_image === images.dashboard;

/** The command that rolls an open window back from its backup. */
export const rollbackCommand = (host: Host, id: string) => `npx zx scripts/all.ts --host ${host.name} --rollback-window ${id} --yes`;

/** Why a run must not touch the backend while a window is open, and the ways out. */
export interface WindowProblem {
  /** Without a full stop: doctor adds its own. */
  cause: string;
  fix: string;
}

/** A run's refusal: the cause, that nothing changed, the ways out. */
export const windowRefusal = (problem: WindowProblem) => `${problem.cause}. Nothing was changed. ${problem.fix}`;

/**
 * Why a run must not touch the backend while this window is open; nothing when it may. A window
 * killed before its candidate started left the data the previous images' own: a run goes on
 * (and all.ts closes it). `finishing`: the inventory pinning the candidate finishes it, the
 * candidate staying on the database it may have migrated.
 */
export function openWindowProblem(record: WindowRecord, host: Host, opts: { finishing: boolean }): WindowProblem | undefined {
  const path = windowRecordPath(host);
  if (record === undefined) return undefined;
  if (!isOpen(record)) {
    return {
      cause: `${path} cannot be read (${record.unreadable}), so a promotion's window may be open on ${host.name} and its database migrated by a candidate`,
      fix: 'Look at it and at what the backend runs; remove it only once the host runs images that match its database.',
    };
  }
  if (record.stage !== 'candidate-started') return undefined;
  if (opts.finishing && runsImages(host, record.candidate)) return undefined;
  const { backup } = record;
  const rollBack = backup
    ? `roll it back to what ${host.name} ran before, restoring the backup ${backup.id}${backup.quiesced ? ' the window took with the backend stopped' : ', taken while it still served (--no-backup-window): writes made just before the window are not in it'} (anything written since is lost): ${rollbackCommand(host, backup.id)}`
    : `roll it back by restoring a backup from before the window (npx zx scripts/restore.ts --host ${host.name} --backup ID --yes)`;
  return {
    cause:
      `a promotion's window is still open on ${host.name} (${path}): the promotion from ${record.from} started at ${record.opened.slice(0, 19)}Z ended (killed or cut off) after its candidate ${short(record.candidate.backend)} had started, ` +
      `so the database may be migrated to a version ${short(record.previous.backend)} does not understand (Convex has no downgrade), and a run would start ${short(host.backend_image)} on it`,
    fix: `Either finish the promotion: pin backend_image = "${record.candidate.backend}" and dashboard_image = "${record.candidate.dashboard}" in [hosts.${host.name}], then run npx zx scripts/all.ts --host ${host.name}; or ${rollBack}.`,
  };
}

/**
 * Refuses a run while a promotion's window is open on the host past its candidate's start
 * (openWindowProblem); it changes nothing itself.
 */
export const windowGuard: Step = {
  name: 'promotion-window',
  phases: [
    phase({
      facts: (host: Host) => ({ record: windowRecordFact(host) }),
      plan: ({ record }, host) => {
        const problem = openWindowProblem(record, host, { finishing: true });
        if (problem) throw new Error(windowRefusal(problem));
        return [];
      },
      ok: ({ record }) => {
        if (!isOpen(record)) return 'no promotion window open';
        if (record.stage !== 'candidate-started') return `a promotion window killed before its candidate started (${record.stage}): the data is still the previous images' own`;
        return `finishing the promotion window of ${record.opened.slice(0, 19)}Z: the inventory pins its candidate`;
      },
    }),
  ],
};

/**
 * all.ts --rollback-window ID: refused unless a window is open with that backup and the
 * inventory pins what the host ran before it (the images the rollback starts).
 */
export function rollbackWindowCheck(id: string): Step {
  return {
    name: 'promotion-window',
    phases: [
      phase({
        facts: (host: Host) => ({ record: windowRecordFact(host) }),
        plan: ({ record }, host) => {
          if (record === undefined) throw new Error(`no promotion window is open on ${host.name} (${windowRecordPath(host)} does not exist): there is nothing to roll back. To restore a backup anyway: npx zx scripts/restore.ts --host ${host.name} --backup ${id} --yes. Nothing was changed.`);
          if (!isOpen(record)) throw new Error(windowRefusal(openWindowProblem(record, host, { finishing: false })!));
          if (record.backup?.id !== id) throw new Error(`the promotion window open on ${host.name} recorded ${record.backup ? `the backup ${record.backup.id}` : 'no backup'}, not ${id}: --rollback-window takes the window's own backup. Nothing was changed.`);
          if (!runsImages(host, record.previous)) {
            throw new Error(`the inventory pins ${short(host.backend_image)} and ${short(host.dashboard_image)} for ${host.name}, but the window replaced ${short(record.previous.backend)} and ${short(record.previous.dashboard)}: pin backend_image = "${record.previous.backend}" and dashboard_image = "${record.previous.dashboard}" in [hosts.${host.name}], so that the rollback starts what ran on that backup's data. Nothing was changed.`);
          }
          return [];
        },
        ok: ({ record }) => (isOpen(record) ? `rolling back the promotion window of ${record.opened.slice(0, 19)}Z (${short(record.candidate.backend)} → ${short(record.previous.backend)})` : ''),
      }),
    ],
  };
}
