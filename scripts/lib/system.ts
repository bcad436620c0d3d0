// Facts and commands about the droplet's operating system: packages, the init system, services.
// Real droplets run systemd; the test fleet (and some containers) do not, so both are supported
// by asking PID 1 at the moment a service is touched.
import pRetry from 'p-retry';
import type { Fact, StepContext } from './step.ts';
import { memoKey } from './step.ts';
import { sh } from './shell.ts';

/** Every package any step may ask about, read in one dpkg query. */
const KNOWN_PACKAGES = [
  'docker.io', 'docker-ce', 'docker-compose', 'docker-compose-v2', 'docker-compose-plugin',
  'postgresql', 'postgresql-client', 'nginx', 'certbot', 'ufw', 'iptables', 'curl', 'ca-certificates', 'cron', 'openssl',
];

export interface Packages {
  installed: Set<string>;
  /** Unpacked or half-configured: a dpkg run was killed, or is still going (an apt-get that a
   * killed run left behind). Their files may be on disk, so only dpkg's word counts. */
  unfinished: Set<string>;
}

const FINISHED_OR_ABSENT = new Set(['installed', 'not-installed', 'config-files', '']);

export const installedPackages: Fact<Packages> = {
  key: 'packages',
  command: sh`dpkg-query -W -f='\${Package} \${db:Status-Status}\\n' ${KNOWN_PACKAGES}`,
  parse: out => {
    const states = out.split('\n').map(line => line.trim().split(' ') as [string, string?]);
    return {
      installed: new Set(states.filter(([, status]) => status === 'installed').map(([name]) => name)),
      unfinished: new Set(states.filter(([name, status]) => name && !FINISHED_OR_ABSENT.has(status ?? '')).map(([name]) => name)),
    };
  },
};

export const initSystem: Fact<'systemd' | 'other'> = {
  key: 'init',
  command: 'cat /proc/1/comm',
  parse: out => (out.trim() === 'systemd' ? 'systemd' : 'other'),
};

/** The pending handler of a changed unit file or drop-in: `systemctl daemon-reload`. */
export const SYSTEMD_RELOAD = 'systemd-daemon-reload';

/** A shell snippet that starts/restarts/reloads a service under systemd or SysV `service`. */
export function serviceScript(service: string, action: 'start' | 'restart' | 'reload' | 'enable-start'): string {
  const systemd = action === 'enable-start' ? sh`systemctl enable --now ${service}` : sh`systemctl ${action} ${service}`;
  const sysv = sh`service ${service} ${action === 'enable-start' ? 'start' : action}`;
  return `if [ "$(cat /proc/1/comm)" = systemd ]; then ${systemd}; else ${sysv}; fi`;
}

/**
 * Shell lines that poll `condition` (a command) every 0.1 s and exit 0 as soon as it holds; after
 * about `seconds` they print `timeout` on stderr and exit 1. They end the shell they run in, so a
 * caller that goes on afterwards runs them in a subshell.
 */
export function exitWhen(condition: string, seconds: number, timeout: string): string {
  return [
    `for i in $(seq ${seconds * 10}); do`,
    `  if ${condition}; then exit 0; fi`,
    '  sleep 0.1',
    'done',
    sh`echo ${timeout} >&2`,
    'exit 1',
  ].join('\n');
}

const TRANSIENT_APT = /Temporary failure resolving|Failed to fetch|Could not connect|Connection timed out|Unable to connect|Hash Sum mismatch/;
/** Another apt or dpkg holds a lock apt does not wait for (DPkg::Lock::Timeout covers only dpkg's). */
const APT_LOCKED = /Could not get lock|Unable to lock|locked by another process/;

/**
 * Installs what is missing (and nothing else), non-interactively. An entry "a|b|c" installs the
 * first of those the distribution has. The dpkg lock is waited for by apt itself; the lists and
 * archives locks, which apt does not wait for (held by unattended-upgrades, or by an apt-get a
 * killed run left behind), and network hiccups are retried with bounded backoff; a real failure
 * is not. The package lists are refreshed once per run, and a dpkg run that was interrupted (a
 * run killed during an install) is finished first.
 */
export async function aptInstall(ctx: StepContext, packages: string[]): Promise<void> {
  const aptGet = `apt_get() { apt-get -q -y -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@"; }`;
  const started = Date.now();
  const retrying = <T>(what: string, attempt: () => Promise<T>) =>
    pRetry(attempt, {
      retries: 40,
      minTimeout: 2000,
      maxTimeout: 10_000,
      maxRetryTime: 300_000,
      shouldRetry: ({ error }) => TRANSIENT_APT.test(error.message) || APT_LOCKED.test(error.message),
      onFailedAttempt: ({ error, retriesLeft }) => {
        if (retriesLeft > 0 && APT_LOCKED.test(error.message)) ctx.progress(`${what}: apt is locked by another process; retrying (${Math.round((Date.now() - started) / 1000)}s)`);
      },
    });
  if (!ctx.memo.has(APT_UPDATED)) {
    await retrying('apt-get update', () => ctx.run(`${aptGet}\napt_get update`, 'apt-get update', { onOutput: chunk => ctx.progress(chunk) }));
    ctx.memo.set(APT_UPDATED, true);
  }
  const script = [
    'set -e',
    aptGet,
    'wanted=""',
    `for entry in ${sh`${packages}`}; do`,
    '  pick=""',
    `  for p in $(echo "$entry" | tr '|' ' '); do`,
    `    if apt-cache policy "$p" 2>/dev/null | grep -q 'Candidate: [0-9]'; then pick=$p; break; fi`,
    '  done',
    `  [ -n "$pick" ] || { echo "no package among $entry is available from apt on this host" >&2; exit 100; }`,
    '  wanted="$wanted $pick"',
    'done',
    'apt_get install --no-install-recommends $wanted',
  ].join('\n');
  const what = `apt-get install ${packages.join(' ')}`;
  await retrying('apt-get install', async () => {
    try {
      return await ctx.run(script, what, { onOutput: chunk => ctx.progress(chunk) });
    } catch (error) {
      // apt waits for the dpkg lock first (an apt-get a killed run left behind may still be
      // working), then refuses while a dpkg run stays interrupted. Finish that run, then again.
      if (!DPKG_INTERRUPTED.test((error as Error).message)) throw error;
      ctx.progress('finishing an interrupted dpkg run (dpkg --configure -a)');
      await ctx.run('dpkg --force-confdef --force-confold --configure -a', 'dpkg --configure -a', { onOutput: chunk => ctx.progress(chunk) });
      return ctx.run(script, what, { onOutput: chunk => ctx.progress(chunk) });
    }
  });
}

const DPKG_INTERRUPTED = /dpkg was interrupted/;

const APT_UPDATED = memoKey<true>('apt-updated');

/** Ensures packages are installed; returns whether anything was missing. */
export async function ensurePackages(ctx: StepContext, packages: string[]): Promise<boolean> {
  const { installed } = await ctx.fact(installedPackages);
  const missing = packages.filter(p => !installed.has(p));
  if (missing.length === 0) return false;
  await ctx.change(`install ${missing.join(', ')}`, () => aptInstall(ctx, missing));
  return true;
}
