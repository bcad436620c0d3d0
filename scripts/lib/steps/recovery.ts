// The disaster recovery drill (restore.ts --from-repository): a snapshot of the off-host
// repository fetched onto a droplet, its backup verified and put in <root>/backups/<id>, its .env
// (INSTANCE_SECRET, database credentials) put in place before the install runs, so that the
// rebuilt instance has the same secret and the old admin key keeps working. restore.ts then runs
// the install and the ordinary restore of that backup.
import type { Host } from '../inventory.ts';
import type { Step } from '../step.ts';
import { memoKey } from '../step.ts';
import type { FileState } from '../files.ts';
import { fileFact } from '../files.ts';
import type { Change } from '../plan.ts';
import { fileChanges, phase } from '../plan.ts';
import { sh } from '../shell.ts';
import { BACKUP_ID, BACKUP_SCRIPT, installBackupScript } from './backup.ts';
import { FETCHED_ENV, knownHostsChanges, offsiteOf, secretsText, TARGET_KNOWN_HOSTS } from './offsite.ts';
import { envFile, envOf, envPath } from './secret.ts';

/** The local backup id the fetched snapshot holds, for the restore that follows. */
export const FETCHED_BACKUP = memoKey<string>('fetched-backup');

/** --snapshot, checked before anything connects: an id restic knows or "latest". */
export function snapshotUsageProblem(snapshot: unknown): string | undefined {
  if (typeof snapshot !== 'string' || snapshot === '') return '--snapshot needs a value: a snapshot id (backup.ts --list shows them) or latest.';
  if (snapshot !== 'latest' && !/^[0-9a-f]{8,64}$/.test(snapshot)) return `--snapshot "${snapshot}" is neither a restic snapshot id (8 to 64 hexadecimal digits) nor latest.`;
  return undefined;
}

/**
 * Fetches the snapshot (the instance's newest for "latest"): verified before anything is kept,
 * and refused (by the script, which compares the secrets without showing them) on a droplet whose
 * .env holds another INSTANCE_SECRET, unless `forceReplace`; then puts its .env in place.
 */
export function fetchSnapshot(snapshot: string, pinned: string | undefined, forceReplace = false): Step {
  return {
    name: 'fetch-snapshot',
    phases: [
      phase({
        facts: () => ({ script: fileFact(BACKUP_SCRIPT), knownHosts: fileFact(TARGET_KNOWN_HOSTS) }),
        plan: ({ script, knownHosts }, host) => {
          const offsite = offsiteOf(host);
          const which = snapshot === 'latest' ? `the newest snapshot of ${host.instance_name}` : `snapshot ${snapshot}`;
          const fetch: Change = {
            label: `fetch ${which} from ${offsite.repository} and verify it`,
            script: forceReplace ? sh`${BACKUP_SCRIPT} fetch - ${snapshot} --force-replace` : sh`${BACKUP_SCRIPT} fetch - ${snapshot}`,
            stdin: secretsText(offsite),
            streams: true,
            after: (stdout, memo) => {
              const id = /^FETCHED (\S+)$/m.exec(stdout)?.[1];
              if (!id || !BACKUP_ID.test(id)) throw new Error(`${BACKUP_SCRIPT} fetch finished without naming the backup it fetched:\n${stdout}`);
              memo.set(FETCHED_BACKUP, id);
              return `fetched ${which} from ${offsite.repository}: backup ${id} (verified) in ${host.root}/backups/${id}, its .env in ${FETCHED_ENV}`;
            },
          };
          return [...installBackupScript(script, host), ...knownHostsChanges(knownHosts, host, pinned), fetch];
        },
      }),
      // Read once the fetch has run (a dry run, which fetched nothing, stops before it).
      phase({
        facts: (host: Host) => ({ fetched: fileFact(FETCHED_ENV), current: fileFact(envPath(host)) }),
        plan: (facts, host) => planRecoveredEnv(facts, host, forceReplace),
      }),
    ],
  };
}

export interface RecoveredEnvFacts { fetched: FileState; current: FileState }

/**
 * The snapshot's .env in place. A droplet whose .env holds another INSTANCE_SECRET runs another
 * instance: refused unless `forceReplace`, and then its .env is kept aside first.
 */
export function planRecoveredEnv(facts: RecoveredEnvFacts, host: Host, forceReplace: boolean, now = new Date()): Change[] {
  if (facts.fetched.kind !== 'file') throw new Error(`${FETCHED_ENV} is missing: the snapshot was not fetched. Nothing was changed.`);
  const wanted = envOf(facts.fetched);
  const current = envOf(facts.current);
  const other = current.get('INSTANCE_SECRET') && current.get('INSTANCE_SECRET') !== wanted.get('INSTANCE_SECRET');
  // The fetched copy goes once it is in place: the only copy of the secrets is .env.
  const write = [
    ...fileChanges(facts.current, { ...envFile(host, wanted), label: `.env from the snapshot (its INSTANCE_SECRET and database credentials)` }),
    { label: `remove ${FETCHED_ENV}`, script: sh`rm -f ${FETCHED_ENV}` },
  ];
  if (!other) return write;
  const aside = `${envPath(host)}.before-recovery-${now.toISOString().replace(/[-:]/g, '').replace(/\..*/, '')}Z`;
  if (!forceReplace) {
    throw new Error(
      `${host.name} already runs another instance (its .env holds a different INSTANCE_SECRET): restoring the snapshot would replace its data and its secret. ` +
        `Add --force-replace to replace it (its .env is kept as ${aside}). Nothing was changed.`,
    );
  }
  return [{ label: `keep the other instance's .env as ${aside}`, script: sh`cp -p ${envPath(host)} ${aside}` }, ...write];
}
