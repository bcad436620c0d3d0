// Runs on hosts whose backups go off-host, and on the SFTP targets they name: each host first
// gets restic and its own key (made on it), then the target ([backup] repository_host) is
// prepared for that key and its host key read, then the host's own work runs with that host key
// pinned. One session per host and one per target for the whole run; a target serves its
// hosts one after another (its run lock would make them wait anyway).
import type { Host } from './inventory.ts';
import type { Args, RunInfo } from './cli.ts';
import { exitCode, forEachHost, loadHosts, localDir, makeReporter, requireOffsiteSecrets, sessionFor, withSession } from './cli.ts';
import type { HostSession } from './session.ts';
import type { HostRun, Reporter } from './report.ts';
import { backupTarget, targetHostKey } from './steps/backup-target.ts';
import { clientPublicKey, keyOf, offsiteClient } from './steps/offsite.ts';

/** A host's work once its target is ready: `pinned` is the target's host key, if it has a target. */
export type OffsiteWork = (session: HostSession, pinned: string | undefined, run: RunInfo) => Promise<void>;

/** Prepares a host's target for its key; resolves to the target's host key, or nothing if that failed. */
type Targets = { prepare: (host: Host, publicKey: string) => Promise<string | undefined>; close: () => HostRun[] };

/** The sessions of the targets, opened when first needed, each serving one host at a time. */
function targetSessions(hosts: Map<string, Host>, args: Args, reporter: Reporter, script: string): Targets {
  const sessions = new Map<string, { session: HostSession; queue: Promise<unknown> }>();
  return {
    prepare: (host, publicKey) => {
      const offsite = host.backup.offsite!;
      const name = offsite.repository_host!;
      let entry = sessions.get(name);
      if (!entry) {
        const session = sessionFor(hosts.get(name)!, args, reporter, script);
        entry = { session, queue: session.open() };
        sessions.set(name, entry);
      }
      const { session } = entry;
      const turn = entry.queue.then(async () => {
        if (!(await session.run([backupTarget(offsite.sftp!, [{ name: host.name, publicKey }])]))) return undefined;
        return session.fact(targetHostKey);
      });
      entry.queue = turn.catch(() => undefined);
      return turn;
    },
    close: () => [...sessions.values()].map(({ session }) => session.close()),
  };
}

/** Placeholder for a key a dry run would make: its plan shows where it would go. */
const keyToMake = (host: Host) => `<the key ${host.name} makes>`;

/** Restic and the key on the host, its target prepared; then `work`, with the target's host key. */
async function withTarget(session: HostSession, targets: Targets, run: RunInfo, work: OffsiteWork): Promise<void> {
  const dryRun = Boolean(run.args.check);
  const host = session.host;
  if (!(await session.open({ steps: [offsiteClient] }))) return;
  if (!(await session.run([offsiteClient]))) return;
  let pinned: string | undefined;
  if (host.backup.offsite?.repository_host) {
    const publicKey = keyOf(await session.fact(clientPublicKey)) ?? (dryRun ? keyToMake(host) : undefined);
    if (!publicKey) throw new Error(`${host.name} has no backup key after offsite-client made it`);
    pinned = await targets.prepare(host, publicKey);
    if (!pinned) throw new Error(`the backup target ${host.backup.offsite.repository_host} could not be prepared (see its lines above); nothing was copied off-host`);
  }
  await work(session, pinned, run);
}

/**
 * The whole life of a script whose hosts keep copies off-host: parse, load, per host its target
 * then its work (a host without a repository, or any host when nothing is to be `prepare`d:
 * `plain`), recap with the targets, exit.
 */
export async function runOffsite(args: Args, script: string, work: OffsiteWork, plain: (session: HostSession) => Promise<void>, prepare = true): Promise<never> {
  const { inventory, hosts } = loadHosts(args);
  requireOffsiteSecrets(hosts);
  const targetNames = [...new Set(hosts.map(h => h.backup.offsite?.repository_host).filter((t): t is string => t !== undefined))];
  const reporter = makeReporter(args, inventory, [...hosts, ...targetNames.map(t => inventory.hosts.get(t)!)], script);
  const targets = targetSessions(inventory.hosts, args, reporter, script);
  const dryRun = Boolean(args.check);
  const run: RunInfo = { args, local: (...parts) => localDir(inventory, ...parts) };
  const runs = await forEachHost(hosts, Number(args.parallel ?? 10), host => {
    const session = sessionFor(host, args, reporter, script);
    return withSession(session, () => (host.backup.offsite && prepare ? withTarget(session, targets, run, work) : plain(session)));
  });
  const all = [...runs, ...targets.close()];
  const code = exitCode(all, dryRun);
  reporter.recap(all, { script, check: dryRun, exit: code });
  process.exit(code);
}
