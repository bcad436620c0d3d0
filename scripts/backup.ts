#!/usr/bin/env zx
// A verified backup now (pg_dump -Fc of the database, a tar of data and storage, SHA256SUMS)
// under <root>/backups/<id>/, with rotation ([backup] keep = N), copied off-host with restic when
// [backup] repository is set; or, with --schedule, a daily job that does the same; or --list.
import { commandLine, converge } from './lib/cli.ts';
import { runOffsite } from './lib/offsite-runbook.ts';
import type { HostSession } from './lib/session.ts';
import { backup, backupSchedule, backupScriptInline, formatBytes, listBackups, offsiteBackup } from './lib/steps/backup.ts';
import { describeSnapshot, offsiteOf, parseSnapshots, secretsText } from './lib/steps/offsite.ts';
import { RemoteError } from './lib/ssh.ts';

const args = commandLine({
  script: 'backup',
  summary:
    'Makes a verified backup of the Convex database, data and storage in <root>/backups/<id>/ and keeps the newest [backup] keep = N;\n' +
    'with [backup] repository, copies it and .env off-host with restic (encrypted) and forgets by keep_daily/weekly/monthly.\n' +
    'A failed backup is removed and never counted; the newest good backup is never deleted.',
  extraHelp: `
  --schedule            instead: install a daily backup (systemd timer, or cron where PID 1 is not systemd),
                        off-host too with a repository (its password in a root-only file on the droplet)
  --verify              also run restic check, reading 10% of the repository's data
  --list                instead: list the good backups, and the off-host snapshots, with times and sizes
`,
  booleans: ['schedule', 'list', 'verify'],
});

/** The off-host snapshots of the host's instance, read with the password on stdin. */
async function listSnapshots(session: HostSession): Promise<void> {
  const offsite = offsiteOf(session.host);
  await session.record('offsite-snapshots', async () => {
    const label = `list the snapshots in ${offsite.repository}`;
    const result = await session.conn!.run(backupScriptInline(session.host, 'snapshots', '-'), label, { stdin: secretsText(offsite), allowFail: true });
    if (result.code !== 0) throw new Error(new RemoteError(session.host.name, label, result).message);
    const listed = parseSnapshots(result.stdout);
    return listed.length ? `${listed.length} snapshot(s) in ${offsite.repository}: ${listed.map(l => describeSnapshot(l, formatBytes)).join(', ')}` : `no snapshot in ${offsite.repository} yet`;
  });
}

await runOffsite(
  args,
  'backup',
  (session, pinned) => session.run([args.schedule ? backupSchedule(pinned) : offsiteBackup({ pinned, verify: Boolean(args.verify) })]).then(() => undefined),
  async session => {
    if (args.verify && !args.list) throw new Error(`--verify checks the off-host repository, and hosts.${session.host.name}.backup.repository is not set. Nothing was changed.`);
    await converge(session, [args.list ? listBackups : args.schedule ? backupSchedule() : backup], undefined);
    // Read-only: the list neither installs restic nor prepares the target.
    if (args.list && session.host.backup.offsite && !session.failed) await listSnapshots(session);
  },
  !args.list,
);
