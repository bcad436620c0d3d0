// The steps of a promotion's window on the target (all.ts --promote): the candidate's images
// pulled and verified by digest while prod still serves; then the window itself, one step:
// prod quiesced (maintenance on, backend stopped) for an exact backup, the candidate's backend
// started and waited for until it answers, and maintenance off. What the new backend logged
// tells whether its start migrated the database, and so what a rollback has to do.
import type { Host } from '../inventory.ts';
import type { Fact, Step } from '../step.ts';
import { memoKey } from '../step.ts';
import type { Change } from '../plan.ts';
import { phase, withHandler } from '../plan.ts';
import type { FileState } from '../files.ts';
import { fileFact } from '../files.ts';
import { loadYaml } from '../yaml.ts';
import { lines, script, sh } from '../shell.ts';
import { BACKUP_SCRIPT, installBackupScript, makeBackup } from './backup.ts';
import { planCompose } from './compose.ts';
import { composePath } from './secret.ts';
import type { MaintenanceFacts } from './maintenance.ts';
import { MAINTENANCE_OFF, NOW, maintenanceFacts, maintenanceOffHandler, parseTime, planMaintenanceOn } from './maintenance.ts';
import type { OpenWindow } from './window-record.ts';
import { planCandidateStarts, planOpenWindow, recordWindowBackupScript } from './window-record.ts';
import { CONTAINERS, containersFact, dockerState, requireCompose } from './docker.ts';
import type { ContainerState, DockerState } from './docker.ts';
import { imagesFact, pullVerifiedScript, scriptFailure, startBackendAnsweringScript } from './up.ts';

/** The images the host would pull: those of its references not on the host yet. */
export function planPrePull(images: Map<string, string>, host: Host): Change[] {
  const missing = [...images].filter(([, id]) => !id).map(([ref]) => ref);
  if (missing.length === 0) return [];
  return [{ label: `pull ${missing.join(' and ')} (verified by digest; nothing is stopped)`, script: pullVerifiedScript(host, missing), streams: true, failure: scriptFailure }];
}

/** Prod before its window: the candidate's images on the host, by digest, so the window holds no pull. */
export const prePull: Step = {
  name: 'pre-pull',
  phases: [
    phase({
      facts: (host: Host) => ({ images: imagesFact(host) }),
      plan: ({ images }, host) => planPrePull(images, host),
      // The engine finds a repo@sha256 reference only by that digest.
      ok: (_, host) => `${host.backend_image.split('/').pop()} and ${host.dashboard_image.split('/').pop()} are on ${host.name} already, found by digest`,
    }),
  ],
};

/**
 * When the backend stopped and when the candidate answered, by the droplet's clock: the window
 * of a host without domains (no maintenance switch), and where the candidate's log begins.
 */
export const BACKEND_STOPPED_AT = memoKey<number>('backend-stopped-at');
export const BACKEND_ANSWERED_AT = memoKey<number>('backend-answered-at');

/**
 * The backend stopped (as compose stops it: its stop signal, 10 s of grace; the container and
 * its data stay), or nothing when it is not running.
 */
export function planStopBackend(facts: { containers: Map<string, ContainerState> }): Change[] {
  const backend = facts.containers.get(CONTAINERS.backend);
  if (!backend || backend.status !== 'running') return [];
  return [
    {
      label: 'stop the backend, so that nothing writes during the backup',
      script: lines(sh`docker stop --time 10 ${CONTAINERS.backend} >/dev/null || exit 1`, NOW),
      after: (stdout, memo) => memo.set(BACKEND_STOPPED_AT, parseTime(stdout)),
    },
  ];
}

/** The backend started from the compose file as it now is (the candidate's digests) and waited for until /version answers. */
export function planStartBackend(facts: { docker: DockerState }, host: Host): Change[] {
  return [
    {
      label: `start the backend on ${host.backend_image.split('/').pop()} and wait until it answers`,
      script: script`${startBackendAnsweringScript(host, requireCompose(facts.docker))}
${NOW}`,
      streams: true,
      failure: scriptFailure,
      after: (stdout, memo) => memo.set(BACKEND_ANSWERED_AT, parseTime(stdout)),
    },
  ];
}

/** How long the window's backup took, by the droplet's clock: the part of the window that grows with the data. */
export const BACKUP_SECONDS = memoKey<number>('window-backup-seconds');

/**
 * The backup change, its duration kept in BACKUP_SECONDS (its failure still fails it), and its id
 * recorded in the window's record before the change ends. The script's stdout is only its
 * BACKUP and ROTATED lines (its progress goes to stderr, which streams), so it is read whole.
 */
function timedBackup(host: Host, window: WindowOpening): Change {
  const made = makeBackup(host);
  return {
    ...made,
    script: script`${NOW}
made=$( ${made.script!}
) || exit $?
${sh`printf '%s\\n' "$made"`}
${sh`id=$(printf '%s\\n' "$made" | awk '$1 == "BACKUP" { print $2 }')`}
${sh`case $id in [0-9]*T[0-9]*Z) ;; *) echo 'the backup named no id' >&2; exit 1 ;; esac`}
${recordWindowBackupScript(window, host)}
${NOW}`,
    after: (stdout, memo) => {
      const times = [...stdout.matchAll(/^(\d+\.\d+)$/gm)].map(m => Number(m[1]));
      if (times.length >= 2) memo.set(BACKUP_SECONDS, times[times.length - 1]! - times[0]!);
      return made.after?.(stdout, memo);
    },
  };
}

/** What the window's record says from the start; `backup` only when it was taken before the window (--no-backup-window). */
export type WindowOpening = Omit<OpenWindow, 'stage'>;

export interface WindowFacts extends MaintenanceFacts {
  containers: Map<string, ContainerState>;
  docker: DockerState;
  backupScript: FileState;
  compose: FileState;
}

/**
 * The window, planned from one reading taken before it opens, so that no reading falls inside
 * it: docker-compose.yml on the candidate's digests (the old backend still serving), maintenance
 * on (its off switch armed for the next run), the backend stopped, a backup nothing can write
 * past, the backend started and waited for, maintenance off. Always changes: it is the promotion
 * itself, never "done already".
 */
export function planWindow(facts: WindowFacts, host: Host, window: WindowOpening): Change[] {
  // Without a backup taken before it, the window takes its own.
  const backup = window.backup ? [] : [...installBackupScript(facts.backupScript, host), timedBackup(host, window)];
  return [
    // Before anything stops: a run killed from here on leaves the record for the next run.
    ...planOpenWindow(window, host),
    // Written while the old backend still serves: nothing restarts until the start below.
    ...planCompose(facts.compose, host),
    ...(host.domains ? planMaintenanceOn(facts, host, { pending: true }) : []),
    ...planStopBackend(facts),
    ...backup,
    ...planCandidateStarts(host),
    ...planStartBackend(facts, host),
    ...(host.domains ? withHandler([], maintenanceOffHandler(host), [MAINTENANCE_OFF]) : []),
  ];
}

/** The window; with `window.backup` (--no-backup-window) the backup was taken before it, while prod served. */
export function promotionWindow(window: WindowOpening): Step {
  return {
    name: 'window',
    warm: loadYaml,
    phases: [
      phase({
        facts: (host: Host) => ({
          ...maintenanceFacts(host),
          containers: containersFact,
          docker: dockerState,
          backupScript: fileFact(BACKUP_SCRIPT),
          compose: fileFact(composePath(host)),
        }),
        plan: (facts, host) => planWindow(facts, host, window),
      }),
    ],
  };
}

/** What the backend's start logged about its database's metadata version (model::migrations). */
export interface MigrationLog {
  /** The versions it migrated to ("Migrated N"), in order; empty when it migrated nothing. */
  migrated: number[];
  /** "db metadata version up to date at N". */
  upToDateAt?: number;
  /** "persisted db metadata version is ahead at N, this binary is at M": an older binary on a newer database. */
  ahead?: { persisted: number; binary: number };
}

export function parseMigrationLog(text: string): MigrationLog {
  // A line that ends with "Migrated N" (the "Executing Migration" line quotes it mid-line).
  const migrated = [...text.matchAll(/\bMigrated (\d+)\s*$/gm)].map(m => Number(m[1]));
  const upToDate = [...text.matchAll(/db metadata version up to date at (\d+)/g)].pop();
  const ahead = /persisted db metadata version is ahead at (\d+), this binary is at (\d+)/.exec(text);
  return {
    migrated,
    ...(upToDate ? { upToDateAt: Number(upToDate[1]) } : {}),
    ...(ahead ? { ahead: { persisted: Number(ahead[1]), binary: Number(ahead[2]) } } : {}),
  };
}

/** The backend container's log lines about migrations since `since` (seconds since the epoch, the droplet's clock). */
export function migrationLogFact(since: number): Fact<MigrationLog> {
  return {
    key: `backend-migrations:${since}`,
    command: sh`docker logs --since ${since.toFixed(3)} ${CONTAINERS.backend} 2>&1 | grep -E 'Migrating to|Migrated [0-9]|db metadata version'; true`,
    parse: out => parseMigrationLog(out),
  };
}

/** How prod goes back after the candidate failed (or why it does not), in the operator's words. */
export type RollbackPlan = { kind: 'images' | 'restore' | 'refused'; backup: string; why: string };

/**
 * Convex migrates its database forward when a newer backend starts, and supports no downgrade:
 * an older binary on the migrated database only warns and runs on data it does not understand.
 * So after a migration the previous images go back on the backup taken in the window (exact:
 * the backend was stopped); without one, the data is the previous images' own and stays. A
 * backup taken while prod served (`quiesced: false`, --no-backup-window) may miss writes: a
 * rollback across a migration is then refused.
 */
export function planRollback(migration: MigrationLog | undefined, backup: string, opts: { quiesced: boolean }): RollbackPlan {
  if (!opts.quiesced && migration?.migrated.length !== 0) {
    const what = migration ? `migrated the database to version ${migration.migrated[migration.migrated.length - 1]}` : 'may have migrated the database (its log could not be read)';
    return {
      kind: 'refused',
      backup,
      why: `its start ${what}, which the previous images do not understand (Convex has no downgrade), and with --no-backup-window the backup ${backup} was taken while prod still served, so it may miss writes: the rollback is refused and prod is left as it is. Its window stays open, so no run puts the previous images back on the migrated database. To go back anyway, losing what was written since that backup: npx zx scripts/all.ts --host <host> --rollback-window ${backup} --yes.`,
    };
  }
  if (!migration) {
    return { kind: 'restore', backup, why: `its backend's log could not be read, so a migration cannot be ruled out: it is restored from ${backup}, taken with the backend stopped just before the switch, and then started on the images it ran before.` };
  }
  if (migration.migrated.length === 0) {
    return { kind: 'images', backup, why: `its start migrated nothing${migration.upToDateAt !== undefined ? ` (db metadata version up to date at ${migration.upToDateAt})` : ''}, so it goes back to the images it ran before; its data stays.` };
  }
  const to = migration.migrated[migration.migrated.length - 1];
  return { kind: 'restore', backup, why: `its start migrated the database to version ${to}, which the previous images do not understand (Convex has no downgrade), so it is restored from ${backup}, taken with the backend stopped just before the switch, and then started on the images it ran before.` };
}
