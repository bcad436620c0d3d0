// Backups: files/convex-ops-backup.sh holds all of the logic (dump, archive, verify, checksum,
// rotate). The backup step installs it, rendered with the host's settings, and runs it; the
// daily timer or cron job runs the same file; read-only uses (the size estimate, verifying a
// backup before a restore, the list) run the rendered text without installing anything.
import { readFileSync } from 'node:fs';
import type { Host } from '../inventory.ts';
import { databaseName } from '../inventory.ts';
import type { Fact, Step, StepContext } from '../step.ts';
import { memoKey } from '../step.ts';
import { ensureFile, fileFact, MANAGED_MARKER } from '../files.ts';
import { ensurePackages, initSystem, installedPackages, serviceScript } from '../system.ts';
import { quote, sh } from '../shell.ts';
import { externalConninfo } from './postgres-external.ts';

const TEMPLATE = new URL('../../../files/convex-ops-backup.sh', import.meta.url);

/** Where the script lives on the droplet; the scheduled job runs it from there. */
export const BACKUP_SCRIPT = '/usr/local/sbin/convex-ops-backup';
export const backupsDir = (host: Host) => `${host.root}/backups`;
export const BACKUP_ID = /^\d{8}T\d{6}Z$/;

export function renderBackupScript(host: Host): string {
  const settings: Record<string, string | number> = {
    VOLUME: host.volume,
    ROOT: host.root,
    DATABASE: databaseName(host),
    PG_MODE: host.postgres.mode,
    PG_USER: host.postgres.user,
    PG_CONNINFO: host.postgres.mode === 'external' ? externalConninfo(host, databaseName(host), 10) : '',
    KEEP: host.backup.keep,
  };
  const text = readFileSync(TEMPLATE, 'utf8').replace(/@([A-Z_]+)@/g, (whole, key: string) => (key in settings ? quote(settings[key]!) : whole));
  // The marker goes on the second line: the first stays the shebang.
  return text.replace(/^(#!.*\n)/, `$1# ${MANAGED_MARKER} from files/convex-ops-backup.sh and the inventory: edit those, not this file.\n`);
}

/** The rendered script run in place, e.g. `estimate` or `verify ID`: nothing is installed. */
export function backupScriptInline(host: Host, ...args: string[]): string {
  return sh`sh -c ${renderBackupScript(host)} convex-ops-backup ${args}`;
}

export interface BackupEstimate { need: number; free: number }

/** What a backup of this host would take, and what is free where it would go. */
export function backupEstimateFact(host: Host): Fact<BackupEstimate | string> {
  return {
    key: `backup-estimate:${host.volume}`,
    // stderr is dropped by facts, so the script's error goes to stdout here.
    command: `${backupScriptInline(host, 'estimate')} 2>&1`,
    parse: (out, code) => {
      const need = /^NEED (\d+)$/m.exec(out);
      const free = /^FREE (\d+)$/m.exec(out);
      if (code !== 0 || !need || !free) return out.trim().split('\n').pop() || `exit ${code}`;
      return { need: Number(need[1]), free: Number(free[1]) };
    },
  };
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

export async function installBackupScript(ctx: StepContext): Promise<void> {
  await ensureFile(ctx, { path: BACKUP_SCRIPT, content: renderBackupScript(ctx.host), mode: '755', label: BACKUP_SCRIPT });
}

export interface BackupMade { id: string; path: string; bytes: number; rotated: string[] }

/** What the backup step made (all.ts --promote records it). */
export const BACKUP_MADE = memoKey<BackupMade>('backup');

/**
 * Makes a backup now with the installed script and reports it; under --check, says it would.
 * `before` names what a safety backup is made for: such a backup is not followed by a rotation,
 * which could otherwise delete the very backup about to be restored.
 */
export async function makeBackup(ctx: StepContext, opts: { before?: string } = {}): Promise<BackupMade | undefined> {
  const { host } = ctx;
  const what = opts.before ? `safety backup before ${opts.before}` : 'backup';
  await installBackupScript(ctx);
  if (ctx.check) {
    ctx.changes.push(opts.before ? `make a ${what} in ${backupsDir(host)}/<id>` : `make a backup in ${backupsDir(host)}/<id>, then keep the newest ${host.backup.keep}`);
    return undefined;
  }
  const out = await ctx.run(`${BACKUP_SCRIPT} run${opts.before ? ' --no-rotate' : ''}`, what, { onOutput: chunk => ctx.progress(chunk) });
  const made = /^BACKUP (\S+) (\d+)$/m.exec(out.stdout);
  if (!made) throw new Error(`${BACKUP_SCRIPT} finished without naming its backup:\n${out.stdout}${out.stderr}`);
  const rotated = [...out.stdout.matchAll(/^ROTATED (\S+)$/gm)].map(m => m[1]!);
  const result: BackupMade = { id: made[1]!, path: `${backupsDir(host)}/${made[1]}`, bytes: Number(made[2]), rotated };
  ctx.changes.push(`${what} ${result.id} (${formatBytes(result.bytes)}, verified) in ${result.path}`);
  if (rotated.length) ctx.changes.push(`rotated away ${rotated.join(', ')} (keep = ${host.backup.keep})`);
  return result;
}

/**
 * Makes a backup now. Like a shell command, it is never "ok": it changes the host every time,
 * and reports the id it made.
 */
export const backup: Step = {
  name: 'backup',
  facts: () => [fileFact(BACKUP_SCRIPT)],
  async run(ctx) {
    const made = await makeBackup(ctx);
    if (made) ctx.memo.set(BACKUP_MADE, made);
  },
};

/** Lists the good backups (read-only). */
export const listBackups: Step = {
  name: 'backups',
  async run(ctx) {
    const out = await ctx.run(backupScriptInline(ctx.host, 'list'), 'list backups');
    const ids = out.stdout.split('\n').filter(Boolean);
    return ids.length ? `${ids.length} good backup(s) in ${backupsDir(ctx.host)}: ${ids.join(', ')}` : `no backup in ${backupsDir(ctx.host)} yet`;
  },
};

// ------------------------------------------------------------------------------------ schedule

const UNIT = 'convex-ops-backup';
const CRON_FILE = '/etc/cron.d/convex-ops-backup';
const SERVICE_FILE = `/etc/systemd/system/${UNIT}.service`;
const TIMER_FILE = `/etc/systemd/system/${UNIT}.timer`;
export const BACKUP_LOG = '/var/log/convex-ops-backup.log';

export const cronFile = (): string =>
  `# ${MANAGED_MARKER} (scripts/backup.ts --schedule): a daily backup of the Convex backend.\n` +
  `SHELL=/bin/sh\nPATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n` +
  `17 3 * * * root ${BACKUP_SCRIPT} run >>${BACKUP_LOG} 2>&1\n`;

const serviceUnit = (): string =>
  `# ${MANAGED_MARKER} (scripts/backup.ts --schedule)\n[Unit]\nDescription=Backup of the Convex backend (convex-ops)\nAfter=docker.service postgresql.service\n\n` +
  `[Service]\nType=oneshot\nExecStart=${BACKUP_SCRIPT} run\nNice=10\nIOSchedulingClass=idle\n`;

const timerUnit = (): string =>
  `# ${MANAGED_MARKER} (scripts/backup.ts --schedule)\n[Unit]\nDescription=Daily backup of the Convex backend (convex-ops)\n\n` +
  `[Timer]\nOnCalendar=*-*-* 03:17:00\nRandomizedDelaySec=15m\nPersistent=true\n\n[Install]\nWantedBy=timers.target\n`;

const timerState: Fact<string> = {
  key: 'backup-timer',
  command: sh`printf '%s %s\n' "$(systemctl is-enabled ${`${UNIT}.timer`} 2>/dev/null)" "$(systemctl is-active ${`${UNIT}.timer`} 2>/dev/null)"`,
  parse: out => out.trim(),
};

const cronRunning: Fact<boolean> = {
  key: 'cron-running',
  command: 'pgrep -x cron >/dev/null && echo running',
  parse: out => out.includes('running'),
};

/**
 * A daily run of the backup script: a systemd timer where PID 1 is systemd, else a cron.d entry
 * (with cron installed and running).
 */
export const backupSchedule: Step = {
  name: 'backup-schedule',
  facts: () => [fileFact(BACKUP_SCRIPT), initSystem, installedPackages, fileFact(CRON_FILE), fileFact(SERVICE_FILE), fileFact(TIMER_FILE), cronRunning],
  async run(ctx) {
    await installBackupScript(ctx);
    if ((await ctx.fact(initSystem)) === 'systemd') {
      const service = await ensureFile(ctx, { path: SERVICE_FILE, content: serviceUnit(), mode: '644', label: `${UNIT}.service` });
      const timer = await ensureFile(ctx, { path: TIMER_FILE, content: timerUnit(), mode: '644', label: `${UNIT}.timer` });
      if (service || timer || (await ctx.fact(timerState)) !== 'enabled active') {
        await ctx.change(`enable and start ${UNIT}.timer`, () => ctx.run(sh`systemctl daemon-reload && systemctl enable --now ${`${UNIT}.timer`}`, 'enable timer'));
      }
      return `${UNIT}.timer runs ${BACKUP_SCRIPT} daily at 03:17 (+ up to 15 min)`;
    }
    await ensurePackages(ctx, ['cron']);
    await ensureFile(ctx, { path: CRON_FILE, content: cronFile(), mode: '644', label: CRON_FILE });
    if (!(await ctx.fact(cronRunning))) {
      await ctx.change('start cron', () => ctx.run(serviceScript('cron', 'enable-start'), 'start cron'));
    }
    return `${CRON_FILE} runs ${BACKUP_SCRIPT} daily at 03:17, logging to ${BACKUP_LOG}`;
  },
};
