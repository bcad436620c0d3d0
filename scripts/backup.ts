#!/usr/bin/env zx
// A verified backup now (pg_dump -Fc of the database, a tar of data and storage, SHA256SUMS)
// under <root>/backups/<id>/, with rotation ([backup] keep = N); or, with --schedule, a daily job.
import { runScript } from './lib/cli.ts';
import { backup, backupSchedule, listBackups } from './lib/steps/backup.ts';

await runScript({
  script: 'backup',
  summary:
    'Makes a verified backup of the Convex database, data and storage in <root>/backups/<id>/ and keeps the newest [backup] keep = N.\n' +
    'A failed backup is removed and never counted; the newest good backup is never deleted.',
  extraHelp: `
  --schedule            instead: install a daily backup (systemd timer, or cron where PID 1 is not systemd)
  --list                instead: list the good backups
`,
  booleans: ['schedule', 'list'],
  steps: (_host, run) => [run.args.list ? listBackups : run.args.schedule ? backupSchedule : backup],
});
