// Restore a backup made by the backup step: verify it, make a safety backup of what is there now
// (the backup step's own change, without rotation), stop the backend (compose stop — never
// `down`, never `-v`), restore the database in one transaction as the role that owns it, swap
// the data and storage folders for the backup's (the old ones kept aside until the backend is
// healthy again), start the backend, wait until it is healthy. restore.ts then runs the checks.
// The database commands are the backup script's own (files/convex-ops-backup.sh), so the
// connection settings and the password handling exist once. A change that fails once the backend
// is stopped starts it again on whatever is then in place, and says what that is.
import type { Host } from '../inventory.ts';
import { databaseName } from '../inventory.ts';
import type { Step } from '../step.ts';
import type { FileState } from '../files.ts';
import { fileFact } from '../files.ts';
import type { Change } from '../plan.ts';
import { phase } from '../plan.ts';
import { lines, script, sh } from '../shell.ts';
import type { Script } from '../shell.ts';
import { BACKUP_ID, BACKUP_MADE, BACKUP_SCRIPT, backupProblemFact, backupScriptInline, backupsDir, installBackupScript, makeBackup } from './backup.ts';
import type { DockerState } from './docker.ts';
import { dockerState, requireCompose } from './docker.ts';
import { scriptFailure, waitHealthyScript } from './up.ts';

/** The id given on the command line (to --backup, or `flag`), checked before anything connects. */
export function restoreUsageProblem(id: unknown, flag = '--backup'): string | undefined {
  if (typeof id !== 'string' || id === '') return `${flag} ID is required: the id of a backup in <root>/backups/ (backup.ts --list shows them).`;
  if (!BACKUP_ID.test(id)) return `${flag} "${id}" is not a backup id; ids are UTC times such as 20261129T031700Z (backup.ts --list shows them).`;
  return undefined;
}

/** One restore: the backup, and the folders it unpacks into and keeps the current ones in. */
export interface RestoreRun {
  id: string;
  staging: string;
  aside: string;
}

/** The restore of backup `id`, its folders named after the time it starts. */
export function restoreRun(host: Host, id: string, now: Date): RestoreRun {
  const time = now.toISOString().replace(/[-:]/g, '').replace(/\..*/, '');
  return { id, staging: `${host.volume}/.convex-ops-restore-${id}`, aside: `${host.volume}/.convex-ops-before-restore-${time}Z` };
}

/**
 * Runs `script`; when it fails, starts the backend again, says on stderr what is in place (the
 * sh lines of `state`, which may read the host) and whether the backend runs, and fails.
 */
function orRecover(run: Script, compose: string, host: Host, state: Script[]): Script {
  return lines(
    script`( ${run}\n)`,
    sh`status=$?`,
    sh`if [ "$status" -ne 0 ]; then`,
    ...state.map(line => script`  ${line}`),
    sh`  if (cd ${host.root} && ${compose.split(' ')} up -d) >/dev/null 2>&1; then backend='The backend was started again.'`,
    sh`  else backend=${`Starting the backend again failed too: run up.ts --host ${host.name}.`}; fi`,
    sh`  printf '%s %s\\n' "$state" "$backend" >&2`,
    sh`  exit "$status"`,
    sh`fi`,
  );
}

/** Renames within the volume (atomic per folder); on any error, what moved is moved back. */
function swapScript(host: Host, { staging, aside }: RestoreRun): Script {
  return lines(
    sh`set -e`,
    sh`v=${host.volume}; s=${staging}; a=${aside}`,
    sh`mkdir -m 700 "$a"`,
    sh`undo() { for f in data storage; do if [ -e "$a/$f" ]; then rm -rf "\${v:?}/$f"; mv "$a/$f" "$v/$f"; fi; done; }`,
    sh`trap undo EXIT`,
    sh`for f in data storage; do`,
    sh`  if [ -e "$v/$f" ]; then mv "$v/$f" "$a/$f"; fi`,
    sh`  if [ -e "$s/$f" ]; then mv "$s/$f" "$v/$f"; else mkdir "$v/$f"; fi`,
    sh`done`,
    sh`trap - EXIT`,
    sh`rmdir "$s"`,
  );
}

/**
 * Where data and storage are after a swap that failed: its undo puts the previous folders back,
 * but what it could not move back is still aside. Read on the host, not assumed, so that the
 * message says what is really in place. One Script a line, for orRecover to indent.
 */
function afterFailedSwap(host: Host, { id, aside }: RestoreRun): Script[] {
  const folders = `${host.volume}/{data,storage}`;
  return [
    sh`left=$(for f in data storage; do if [ -e ${aside}/"$f" ]; then echo "$f"; fi; done)`,
    sh`case $(echo $left | wc -w) in`,
    sh`  0) state=${`The database is now that of ${id}, but the swap was undone, so the folders are the previous ones, which do not belong with that database: run the restore again.`} ;;`,
    sh`  1) state=${`The database is now that of ${id}, but the previous `}"$left"${` could not be moved back and is in ${aside}: look at ${folders} before running anything.`} ;;`,
    sh`  *) state=${`The database is now that of ${id}, but the previous data and storage could not be moved back and are in ${aside}: look at ${folders} before running anything.`} ;;`,
    sh`esac`,
  ];
}

export interface RestoreFacts {
  /** What is wrong with the backup, if anything (the backup script's verify). */
  problem: string | undefined;
  script: FileState;
  docker: DockerState;
}

/**
 * Verified, safety backup, unpacked (the backend still running), stopped, database restored,
 * folders swapped, started; or a refusal when the backup is not good, before anything changed.
 */
export function planRestore(facts: RestoreFacts, host: Host, run: RestoreRun): Change[] {
  const { id, staging, aside } = run;
  if (facts.problem) throw new Error(`${facts.problem}. Nothing was changed.`);
  const compose = requireCompose(facts.docker);
  const inRoot = (...args: string[]) => sh`cd ${host.root} && ${compose.split(' ')} ${args}`;
  const state = (words: string) => [sh`state=${words}`];
  return [
    ...installBackupScript(facts.script, host),
    // What is there now, so that a restore of the wrong backup, or one that fails half-way, can be undone.
    makeBackup(host, `the restore of ${id}`),
    // Unpacked while the backend still runs: the downtime is only the database and the swap.
    {
      label: `unpack data and storage of ${id} into ${staging}`,
      script: sh`rm -rf ${staging} && mkdir -m 700 ${staging} && tar --numeric-owner -xpzf ${`${backupsDir(host)}/${id}/data.tar.gz`} -C ${staging}`,
    },
    { label: 'stop the backend (compose stop backend)', script: inRoot('stop', 'backend') },
    {
      label: `restore database ${databaseName(host)} from ${id} (one transaction, as ${host.postgres.user})`,
      script: orRecover(backupScriptInline(host, 'restore-database', id), compose, host, state('The database restore is one transaction, so the database and the folders are as they were.')),
    },
    {
      label: `swap ${host.volume}/{data,storage} for the backup's (the current ones kept in ${aside} until the backend is healthy)`,
      script: orRecover(swapScript(host, run), compose, host, afterFailedSwap(host, run)),
    },
    {
      label: 'start the backend',
      script: orRecover(inRoot('up', '-d'), compose, host, state(`The database and the folders are now those of ${id}; the previous folders are kept in ${aside}.`)),
      streams: true,
    },
    healthyThenTidy(host, run),
  ];
}

/**
 * The last change of a restore: the backend healthy (up.ts's wait), and only then the previous
 * folders removed. Its failure names the safety backup this run made, to go back with.
 */
function healthyThenTidy(host: Host, run: RestoreRun): Change {
  const { id, aside } = run;
  return {
    label: `wait until the backend is healthy, then remove the previous folders (${aside})`,
    script: script`( ${waitHealthyScript(host, { dashboard: true })}
) || exit 1
${sh`rm -rf ${aside}`}`,
    streams: true,
    failure: (result, memo) => {
      const safety = memo.get(BACKUP_MADE);
      const undo = safety ? ` To go back to the state before this restore: restore.ts --backup ${safety.id} --yes (the safety backup).` : '';
      return `${scriptFailure(result) ?? 'the backend did not become healthy'}\nThe database and the folders are now those of ${id}; the previous folders are kept in ${aside}.${undo}`;
    },
  };
}

/** restore.ts's step: one plan from the facts, refused before anything changes when the backup is not good. */
export function restoreSteps(id: string, now = new Date()): Step[] {
  return [
    {
      name: 'restore',
      phases: [
        phase({
          facts: (host: Host) => ({ problem: backupProblemFact(host, id), script: fileFact(BACKUP_SCRIPT), docker: dockerState }),
          plan: (facts, host) => planRestore(facts, host, restoreRun(host, id, now)),
        }),
      ],
    },
  ];
}
