// Backups: files/convex-ops-backup.sh holds all of the logic (dump, archive, verify, checksum,
// rotate). The backup step installs it, rendered with the host's settings, and runs it; the
// daily timer or cron job (files/convex-ops-backup.{service,timer,cron}) runs the same file;
// read-only uses (the size estimate, verifying a backup before a restore, the list) run the
// rendered text without installing anything.
import type { Host } from '../inventory.ts';
import { databaseName } from '../inventory.ts';
import type { Fact, Step } from '../step.ts';
import { memoKey, pendingHandlers } from '../step.ts';
import type { FileState } from '../files.ts';
import { fileFact, MANAGED_MARKER } from '../files.ts';
import type { Change, Handler } from '../plan.ts';
import { fileChanges, packageChanges, phase, withHandler } from '../plan.ts';
import type { Packages } from '../system.ts';
import { initSystem, installedPackages, serviceScript } from '../system.ts';
import { quote, script, sh } from '../shell.ts';
import type { Script } from '../shell.ts';
import { renderTemplate, templateText } from '../templates.ts';
import { externalConninfo } from './postgres-external.ts';
import { checkOffsite, copyOffsite, knownHostsChanges, offsiteSettings, SECRETS_FILE, secretsText, TARGET_KNOWN_HOSTS } from './offsite.ts';

/** Where the script lives on the droplet; the scheduled job runs it from there. */
export const BACKUP_SCRIPT = '/usr/local/sbin/convex-ops-backup';
export const backupsDir = (host: Host) => `${host.root}/backups`;
export const BACKUP_ID = /^\d{8}T\d{6}Z$/;
export const BACKUP_LOG = '/var/log/convex-ops-backup.log';

/** A file of files/ rendered with these values (the marker and the script's paths are known to all). */
function render(name: string, values: Record<string, string | number> = {}): string {
  return renderTemplate(templateText(name), { managed: MANAGED_MARKER, script: BACKUP_SCRIPT, log: BACKUP_LOG, ...values }, name);
}

/** The backup script with the host's settings, each a quoted sh word. */
export function renderBackupScript(host: Host): string {
  const database = databaseName(host);
  const conninfo = host.postgres.mode === 'external' ? externalConninfo(host, database, 10) : '';
  const settings = { volume: host.volume, root: host.root, database, pg_mode: host.postgres.mode, pg_user: host.postgres.user, pg_conninfo: conninfo, keep: host.backup.keep, ...offsiteSettings(host) };
  return render('convex-ops-backup.sh', Object.fromEntries(Object.entries(settings).map(([key, value]) => [key, quote(value)])));
}

/** The rendered script run in place, e.g. `estimate` or `verify ID`: nothing is installed. */
export function backupScriptInline(host: Host, ...args: string[]): Script {
  return sh`sh -c ${renderBackupScript(host)} convex-ops-backup ${args}`;
}

/** The rendered script run in place as a fact, its error (facts drop stderr) on stdout. */
function backupScriptFact<T>(host: Host, args: string[], parse: (out: string, code: number) => T): Fact<T> {
  return { key: `backup-script:${host.volume}:${args.join(' ')}`, command: script`${backupScriptInline(host, ...args)} 2>&1`, parse };
}

/** The last line of a failed run of the script: its error. */
const failure = (out: string, code: number) => out.trim().split('\n').pop() || `exit ${code}`;

export interface BackupEstimate { need: number; free: number }

/** What a backup of this host would take, and what is free where it would go; else the error. */
export function backupEstimateFact(host: Host): Fact<BackupEstimate | string> {
  return backupScriptFact(host, ['estimate'], (out, code) => {
    const need = /^NEED (\d+)$/m.exec(out);
    const free = /^FREE (\d+)$/m.exec(out);
    return code === 0 && need && free ? { need: Number(need[1]), free: Number(free[1]) } : failure(out, code);
  });
}

export interface LocalBackup { id: string; bytes: number }

/** The good backups, oldest first, with their sizes; else the error. */
export function backupListFact(host: Host): Fact<LocalBackup[] | string> {
  return backupScriptFact(host, ['list'], (out, code) =>
    code === 0
      ? out.split('\n').filter(Boolean).map(line => {
          const [id, bytes] = line.split(' ');
          return { id: id!, bytes: Number(bytes) };
        })
      : failure(out, code),
  );
}

/** Nothing when backup `id` is whole and readable; else what is wrong with it. */
export function backupProblemFact(host: Host, id: string): Fact<string | undefined> {
  return backupScriptFact(host, ['verify', id], (out, code) => (code === 0 ? undefined : failure(out, code)));
}

export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}

/** Installs (or updates) the backup script, or nothing when it is as rendered. */
export function installBackupScript(state: FileState, host: Host): Change[] {
  return fileChanges(state, { path: BACKUP_SCRIPT, content: renderBackupScript(host), mode: '755', label: BACKUP_SCRIPT });
}

export interface BackupMade { id: string; path: string; bytes: number; rotated: string[] }

/** The backup this run made, a safety backup included (all.ts --promote records it). */
export const BACKUP_MADE = memoKey<BackupMade>('backup');

/** What the script printed about the backup it made. */
export function parseBackupMade(stdout: string, host: Host): BackupMade {
  const made = /^BACKUP (\S+) (\d+)$/m.exec(stdout);
  if (!made) throw new Error(`${BACKUP_SCRIPT} finished without naming its backup:\n${stdout}`);
  const rotated = [...stdout.matchAll(/^ROTATED (\S+)$/gm)].map(m => m[1]!);
  return { id: made[1]!, path: `${backupsDir(host)}/${made[1]}`, bytes: Number(made[2]), rotated };
}

/**
 * A backup now, with the installed script, recorded as BACKUP_MADE and named in the output.
 * `before` names what a safety backup is made for: such a backup is not followed by a rotation,
 * which could otherwise delete the very backup about to be restored.
 */
export function makeBackup(host: Host, before?: string): Change {
  const what = before ? `safety backup before ${before}` : 'backup';
  return {
    label: before ? `make a ${what} in ${backupsDir(host)}/<id>` : `make a backup in ${backupsDir(host)}/<id>, then keep the newest ${host.backup.keep}`,
    script: before ? sh`${BACKUP_SCRIPT} run --no-rotate` : sh`${BACKUP_SCRIPT} run`,
    streams: true,
    after: (stdout, memo) => {
      const made = parseBackupMade(stdout, host);
      memo.set(BACKUP_MADE, made);
      const rotated = made.rotated.length ? `; rotated away ${made.rotated.join(', ')} (keep = ${host.backup.keep})` : '';
      return `${what} ${made.id} (${formatBytes(made.bytes)}, verified) in ${made.path}${rotated}`;
    },
  };
}

/**
 * Makes a backup now. Like a shell command, it is never "ok": it changes the host every time,
 * and reports the id it made.
 */
export const backup: Step = {
  name: 'backup',
  phases: [
    phase({
      facts: () => ({ script: fileFact(BACKUP_SCRIPT) }),
      plan: ({ script }, host) => [...installBackupScript(script, host), makeBackup(host)],
    }),
  ],
};

/** What the target preparation learnt, for the host's off-host backup. */
export interface OffsiteOptions {
  /** The target's host key ("ssh-ed25519 AAAA…"), read on its inventory host. */
  pinned?: string;
  /** Also run restic check (--verify). */
  verify?: boolean;
}

/** A backup now, then its copy off-host with retention, then (--verify) restic check. */
export function offsiteBackup(options: OffsiteOptions): Step {
  return {
    name: 'backup',
    phases: [
      phase({
        facts: () => ({ script: fileFact(BACKUP_SCRIPT), knownHosts: fileFact(TARGET_KNOWN_HOSTS) }),
        plan: ({ script, knownHosts }, host) => [
          ...installBackupScript(script, host),
          ...knownHostsChanges(knownHosts, host, options.pinned),
          makeBackup(host),
          copyOffsite(host, BACKUP_SCRIPT),
          ...(options.verify ? [checkOffsite(host, BACKUP_SCRIPT)] : []),
        ],
      }),
    ],
  };
}

/** Lists the good backups (read-only). */
export const listBackups: Step = {
  name: 'backups',
  phases: [
    phase({
      facts: (host: Host) => ({ list: backupListFact(host) }),
      plan: ({ list }) => {
        if (typeof list === 'string') throw new Error(`cannot list the backups: ${list}`);
        return [];
      },
      ok: ({ list }, host) => {
        const backups = typeof list === 'string' ? [] : list;
        const shown = backups.map(b => `${b.id} (${formatBytes(b.bytes)})`);
        return backups.length ? `${backups.length} good backup(s) in ${backupsDir(host)}: ${shown.join(', ')}` : `no backup in ${backupsDir(host)} yet`;
      },
    }),
  ],
};

// ------------------------------------------------------------------------------------ schedule

const UNIT = 'convex-ops-backup';
const CRON_FILE = '/etc/cron.d/convex-ops-backup';
const SERVICE_FILE = `/etc/systemd/system/${UNIT}.service`;
const TIMER_FILE = `/etc/systemd/system/${UNIT}.timer`;

/** A changed unit file needs systemd to read it again, and the timer enabled and started. */
const ENABLE_TIMER: Handler = {
  name: `${UNIT}-timer`,
  label: `enable and start ${UNIT}.timer`,
  script: sh`systemctl daemon-reload && systemctl enable --now ${`${UNIT}.timer`}`,
};

export const cronFile = (): string => render('convex-ops-backup.cron');

const timerState: Fact<string> = {
  key: 'backup-timer',
  command: sh`printf '%s %s\n' "$(systemctl is-enabled ${`${UNIT}.timer`} 2>/dev/null)" "$(systemctl is-active ${`${UNIT}.timer`} 2>/dev/null)"`,
  parse: out => out.trim(),
};

const cronRunning: Fact<boolean> = {
  key: 'cron-running',
  command: sh`pgrep -x cron >/dev/null && echo running`,
  parse: out => out.includes('running'),
};

export interface ScheduleFacts {
  script: FileState;
  init: 'systemd' | 'other';
  packages: Packages;
  cron: FileState;
  service: FileState;
  timer: FileState;
  /** `systemctl is-enabled` and `is-active` of the timer, e.g. "enabled active". */
  timerState: string;
  pending: string[];
  /** The repository password file of the scheduled job. */
  secrets: FileState;
  knownHosts: FileState;
}

/**
 * With a repository: the target's pinned host key and the password file the job reads (root,
 * 0600, its diff masked). Without: a password file left from before is removed.
 */
function scheduleSecrets(facts: ScheduleFacts, host: Host, pinned: string | undefined): Change[] {
  const offsite = host.backup.offsite;
  if (!offsite) return facts.secrets.kind === 'absent' ? [] : [{ label: `remove ${SECRETS_FILE} (no repository is set)`, script: sh`rm -f ${SECRETS_FILE}` }];
  return [
    ...knownHostsChanges(facts.knownHosts, host, pinned),
    ...fileChanges(facts.secrets, { path: SECRETS_FILE, content: secretsText(offsite), mode: '600', secret: true, label: `${SECRETS_FILE} (the repository password, root only)` }),
  ];
}

/** The script, and its daily run: a systemd timer where PID 1 is systemd, else a cron.d entry. */
export function planBackupSchedule(facts: ScheduleFacts, host: Host, pinned?: string): Change[] {
  const script = [...installBackupScript(facts.script, host), ...scheduleSecrets(facts, host, pinned)];
  if (facts.init !== 'systemd') {
    return [...script, ...packageChanges(facts.packages, ['cron']), ...fileChanges(facts.cron, { path: CRON_FILE, content: cronFile(), mode: '644', label: CRON_FILE })];
  }
  const units = [
    ...fileChanges(facts.service, { path: SERVICE_FILE, content: render(`${UNIT}.service`), mode: '644', label: `${UNIT}.service` }, ENABLE_TIMER.name),
    ...fileChanges(facts.timer, { path: TIMER_FILE, content: render(`${UNIT}.timer`), mode: '644', label: `${UNIT}.timer` }, ENABLE_TIMER.name),
  ];
  // A timer found disabled or stopped is enabled and started as a changed unit's would be.
  const pending = facts.timerState === 'enabled active' ? facts.pending : [...facts.pending, ENABLE_TIMER.name];
  return [...script, ...withHandler(units, ENABLE_TIMER, pending)];
}

/**
 * A daily run of the backup script: a systemd timer where PID 1 is systemd, else a cron.d entry
 * with cron running (read again once cron is installed: its package may have started it).
 */
export const backupSchedule = (pinned?: string): Step => ({
  name: 'backup-schedule',
  phases: [
    phase({
      facts: () => ({
        script: fileFact(BACKUP_SCRIPT),
        init: initSystem,
        packages: installedPackages,
        cron: fileFact(CRON_FILE),
        service: fileFact(SERVICE_FILE),
        timer: fileFact(TIMER_FILE),
        timerState,
        pending: pendingHandlers,
        secrets: fileFact(SECRETS_FILE),
        knownHosts: fileFact(TARGET_KNOWN_HOSTS),
      }),
      plan: (facts, host) => planBackupSchedule(facts, host, pinned),
    }),
    phase({
      facts: () => ({ init: initSystem, cronRunning }),
      plan: ({ init, cronRunning }) => (init !== 'systemd' && !cronRunning ? [{ label: 'start cron', script: serviceScript('cron', 'enable-start') }] : []),
      ok: ({ init }) =>
        init === 'systemd' ? `${UNIT}.timer runs ${BACKUP_SCRIPT} daily at 03:17 (+ up to 15 min)` : `${CRON_FILE} runs ${BACKUP_SCRIPT} daily at 03:17, logging to ${BACKUP_LOG}`,
    }),
  ],
});
