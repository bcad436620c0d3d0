// Facts and commands about the droplet's operating system: packages, the init system, services.
// Real droplets run systemd; the test fleet (and some containers) do not, so both are supported
// by asking PID 1 at the moment a service is touched.
import type { Fact } from './step.ts';
import type { Handler } from './plan.ts';
import { STATE_DIR } from './step.ts';
import { lines, script, sh } from './shell.ts';
import type { Script } from './shell.ts';

/** Every package any step may ask about, read in one dpkg query. */
const KNOWN_PACKAGES = [
  'docker.io', 'docker-ce', 'docker-compose', 'docker-compose-v2', 'docker-compose-plugin',
  'postgresql', 'postgresql-client', 'nginx', 'certbot', 'ufw', 'iptables', 'curl', 'ca-certificates', 'cron', 'openssl',
  'restic', 'openssh-client',
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
  command: sh`cat /proc/1/comm`,
  parse: out => (out.trim() === 'systemd' ? 'systemd' : 'other'),
};

/** The pending handler of a changed unit file or drop-in: `systemctl daemon-reload`. */
export const SYSTEMD_RELOAD = 'systemd-daemon-reload';

export const systemdReload: Handler = { name: SYSTEMD_RELOAD, label: 'reload systemd units', script: sh`systemctl daemon-reload` };

/** A shell snippet that starts/restarts/reloads a service under systemd or SysV `service`. */
export function serviceScript(service: string, action: 'start' | 'restart' | 'reload' | 'enable-start'): Script {
  const systemd = action === 'enable-start' ? sh`systemctl enable --now ${service}` : sh`systemctl ${action} ${service}`;
  const sysv = sh`service ${service} ${action === 'enable-start' ? 'start' : action}`;
  return script`if [ "$(cat /proc/1/comm)" = systemd ]; then ${systemd}; else ${sysv}; fi`;
}

/**
 * Shell lines that poll `condition` (a command) every 0.1 s and exit 0 as soon as it holds; after
 * about `seconds` they print `timeout` on stderr and exit 1. They end the shell they run in, so a
 * caller that goes on afterwards runs them in a subshell.
 */
export function exitWhen(condition: Script, seconds: number, timeout: string): Script {
  return lines(
    script`for i in $(seq ${seconds * 10}); do`,
    script`  if ${condition}; then exit 0; fi`,
    sh`  sleep 0.1`,
    sh`done`,
    sh`echo ${timeout} >&2`,
    sh`exit 1`,
  );
}

/** apt's lists are refreshed before an install unless a refresh of ours is this recent (Ansible's cache_valid_time). */
const APT_LISTS_VALID_MINUTES = 10;
const APT_UPDATED_STAMP = `${STATE_DIR}/apt-updated`;

/**
 * A shell function that runs an apt or dpkg command and retries what is worth retrying: network
 * hiccups, and the lists and archives locks that apt does not wait for (held by
 * unattended-upgrades, or by an apt-get a killed run left behind), with backoff for up to five
 * minutes. A dpkg run that a killed run interrupted is finished first (dpkg --configure -a).
 * A real failure prints apt's message and fails at once.
 */
const APT_RETRYING = lines(
  sh`apt_get() { apt-get -q -y -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@"; }`,
  sh`retrying() {`,
  sh`  err=$(mktemp) waited=0 delay=2 configured=`,
  sh`  while :; do`,
  sh`    if "$@" 2>"$err"; then rm -f "$err"; return 0; fi`,
  sh`    if [ -z "$configured" ] && grep -q 'dpkg was interrupted' "$err"; then`,
  sh`      echo 'finishing an interrupted dpkg run (dpkg --configure -a)'; configured=1`,
  sh`      dpkg --force-confdef --force-confold --configure -a && continue`,
  sh`    elif [ "$waited" -lt 300 ] && grep -Eq 'Temporary failure resolving|Failed to fetch|Could not connect|Connection timed out|Unable to connect|Hash Sum mismatch|Could not get lock|Unable to lock|locked by another process' "$err"; then`,
  sh`      echo "$1 $2: apt is busy or the mirror did not answer; retrying in $delay s ($waited s so far)"`,
  sh`      sleep "$delay"; waited=$((waited + delay)); delay=$((delay < 5 ? delay * 2 : 10)); continue`,
  sh`    fi`,
  sh`    cat "$err" >&2; rm -f "$err"; return 1`,
  sh`  done`,
  sh`}`,
);

const APT_UPDATE = lines(sh`retrying apt_get update`, sh`mkdir -p ${STATE_DIR} && touch ${APT_UPDATED_STAMP}`);

/** Refreshes apt's package lists (retrying as APT_RETRYING says). */
export function aptUpdateScript(): Script {
  return lines(sh`set -e`, APT_RETRYING, APT_UPDATE);
}

/**
 * Installs what is missing (and nothing else), non-interactively. An entry "a|b|c" installs the
 * first of those the distribution has. The dpkg lock is waited for by apt itself; see
 * APT_RETRYING for the rest.
 */
export function aptInstallScript(packages: string[]): Script {
  return lines(
    sh`set -e`,
    APT_RETRYING,
    sh`if [ -z "$(find ${APT_UPDATED_STAMP} -mmin ${`-${APT_LISTS_VALID_MINUTES}`} 2>/dev/null)" ]; then`,
    APT_UPDATE,
    sh`fi`,
    sh`wanted=""`,
    sh`for entry in ${packages}; do`,
    sh`  pick=""`,
    sh`  for p in $(echo "$entry" | tr '|' ' '); do`,
    sh`    if apt-cache policy "$p" 2>/dev/null | grep -q 'Candidate: [0-9]'; then pick=$p; break; fi`,
    sh`  done`,
    sh`  [ -n "$pick" ] || { echo "no package among $entry is available from apt on this host" >&2; exit 100; }`,
    sh`  wanted="$wanted $pick"`,
    sh`done`,
    sh`retrying apt_get install --no-install-recommends $wanted`,
  );
}


