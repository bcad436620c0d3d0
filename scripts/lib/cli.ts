// The command line shared by every script: options, inventory, host selection, hosts in
// parallel, the recap and the exit code. A script is a name, a summary and its steps.
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { minimist } from 'zx';
import type { Host, Inventory } from './inventory.ts';
import { defaultInventoryPath, InventoryError, loadInventory, selectHosts } from './inventory.ts';
import { Reporter, recapOf } from './report.ts';
import type { HostRun } from './report.ts';
import { HostSession } from './session.ts';
import type { Step } from './step.ts';
import type { Check } from './check.ts';
import { redact, registerSecret } from './redact.ts';
import { secretEnvValues } from './steps/secret.ts';

export type Args = minimist.ParsedArgs;

/** What steps may need to know about this run beyond their host. */
export interface RunInfo {
  args: Args;
  /** A path beside the inventory, where local artefacts (.secrets/, .convex-ops/) live. */
  local: (...parts: string[]) => string;
}

export const EXIT = { ok: 0, failed: 1, pending: 2 } as const;

const COMMON_HELP = `
Common options:
  --host NAME[,NAME…]   hosts or groups from the inventory (required)
  --inventory FILE      inventory file (default ./inventory.toml, or $CONVEX_OPS_INVENTORY)
  --check               dry run: read state and show what would change, with diffs; change nothing
  --diff                also show file diffs when applying
  --json                print one JSON document (every step's result, the recap, the exit code) on
                        stdout; the usual lines and the recap go to stderr
  --accept-new          record the host key of a host not yet in known_hosts (trust on first use)
  --parallel N          hosts worked on at once (default 10)
  --lock-timeout S      how long to wait for another run on the same host (default 300)
  --allow-unknown-env   let through names in [backend_env] and [dashboard_env] that the images
                        are not known to read
  --help                this text

Exit codes: 0 nothing failed (under --check: nothing would change), 1 a host failed or bad input,
2 under --check: changes are pending.`;

/** What a script's command line takes beyond the common options, and says under --help. */
export interface CommandLineSpec {
  script: string;
  summary: string;
  extraHelp?: string;
  booleans?: string[];
  strings?: string[];
}

export interface ScriptSpec extends CommandLineSpec {
  steps: (host: Host, run: RunInfo) => Step[];
  /** Post-conditions run after the steps (skipped under --check). */
  checks?: (host: Host) => Check[];
}

export function parseArgs(spec: { booleans?: string[]; strings?: string[] }): Args {
  const strings = ['host', 'inventory', 'parallel', 'lock-timeout', ...(spec.strings ?? [])];
  const args = minimist(process.argv.slice(2).filter(a => !/\.[cm]?[jt]s$/.test(a) || a.startsWith('--')), {
    boolean: ['check', 'diff', 'json', 'accept-new', 'allow-unknown-env', 'help', ...(spec.booleans ?? [])],
    string: strings,
  });
  const problem = repeatedOptionProblem(args, strings);
  if (problem) fail(problem);
  return args;
}

/** An option of one value given more than once (minimist makes it a list): which, and how to give it. */
export function repeatedOptionProblem(args: Args, strings: string[]): string | undefined {
  const repeated = strings.find(name => Array.isArray(args[name]));
  if (!repeated) return undefined;
  const values = (args[repeated] as string[]).join(', ');
  const how = repeated === 'host' ? `name several hosts once, comma-separated: --host ${(args.host as string[]).join(',')}` : `give --${repeated} once`;
  return `--${repeated} was given ${(args[repeated] as string[]).length} times (${values}): ${how}. Nothing was changed.`;
}

/** The script's options; under --help, its help text instead, and exit 0. */
export function commandLine(spec: CommandLineSpec): Args {
  const args = parseArgs(spec);
  if (args.help) {
    process.stdout.write(`Usage: npx zx scripts/${spec.script}.ts --host NAME [options]\n\n${spec.summary}\n${spec.extraHelp ?? ''}${COMMON_HELP}\n`);
    process.exit(EXIT.ok);
  }
  return args;
}

/** Loads the inventory and selects hosts, or exits 1 with a message that says how to fix it. */
export function loadHosts(args: Args): { inventory: Inventory; hosts: Host[] } {
  try {
    const inventory = loadInventory(args.inventory ?? defaultInventoryPath(), { allowUnknownEnv: Boolean(args['allow-unknown-env']) });
    const hosts = selectHosts(inventory, args.host);
    for (const host of hosts) preflight(host);
    return { inventory, hosts };
  } catch (error) {
    if (error instanceof InventoryError) fail(error.message);
    throw error;
  }
}

/** What can be checked on the operator's machine before connecting anywhere. */
function preflight(host: Host): void {
  const at = `hosts.${host.name}`;
  if (host.postgres.mode === 'external') {
    const variable = host.postgres.password_env!;
    const password = process.env[variable];
    if (!password) throw new InventoryError(`${at}.postgres.password_env: the environment variable ${variable} is not set. Export it with the database password, then run again.`);
    registerSecret(password);
  }
  const secrets = secretEnvValues(host);
  if (secrets.problems.length) throw new InventoryError(secrets.problems.join('\n'));
  for (const value of secrets.values.values()) registerSecret(value);
  for (const [key, path] of [['identity', host.identity], ['acme.ca_bundle', host.acme.ca_bundle], ['postgres.ca_file', host.postgres.ca_file]] as const) {
    if (path && !existsSync(path)) throw new InventoryError(`${at}.${key}: ${path} does not exist on this machine.`);
  }
}

/**
 * The repository password and credentials of hosts with off-host backups, set on this machine
 * and registered as secrets; only scripts that use the repository ask (backup.ts, restore.ts).
 */
export function requireOffsiteSecrets(hosts: Host[]): void {
  for (const host of hosts) {
    const offsite = host.backup.offsite;
    for (const [key, variable] of offsite ? [['password_env', offsite.password_env], ...offsite.credentials_env.map(name => ['credentials_env', name])] : []) {
      const value = process.env[variable!];
      if (!value) fail(`hosts.${host.name}.backup.${key}: the environment variable ${variable} is not set. Export it with the ${key === 'password_env' ? 'restic repository password' : 'credential restic needs'}, then run again.`);
      registerSecret(value);
    }
  }
}

export function fail(message: string): never {
  process.stderr.write(`error: ${redact(message)}\n`);
  process.exit(EXIT.failed);
}

/** Where local artefacts of an inventory live: beside it, git-ignored. */
export function localDir(inventory: Inventory, ...parts: string[]): string {
  return join(dirname(resolve(inventory.path)), ...parts);
}

export function makeReporter(args: Args, inventory: Inventory, hosts: Host[], script: string): Reporter {
  const reporter = new Reporter({
    json: Boolean(args.json),
    showDiffs: Boolean(args.check || args.diff),
    logPath: localDir(inventory, '.convex-ops', 'convex-ops.log'),
    hosts: hosts.map(h => h.name),
    script,
    argv: process.argv.slice(2),
  });
  for (const warning of inventory.warnings) reporter.warn(undefined, warning);
  return reporter;
}

export function sessionFor(host: Host, args: Args, reporter: Reporter, script: string): HostSession {
  return new HostSession(host, {
    dryRun: Boolean(args.check),
    acceptNew: Boolean(args['accept-new']),
    lockTimeout: Number(args['lock-timeout'] ?? 300),
    script,
    reporter,
  });
}

/** Runs work for each host, at most N at a time; one host's failure never stops another. */
export async function forEachHost<T>(hosts: Host[], parallel: number, work: (host: Host) => Promise<T>): Promise<T[]> {
  const results: T[] = new Array(hosts.length);
  let next = 0;
  const worker = async () => {
    while (next < hosts.length) {
      const index = next++;
      results[index] = await work(hosts[index]!);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(parallel, hosts.length)) }, worker));
  return results;
}

export function exitCode(runs: HostRun[], check: boolean): number {
  if (runs.some(r => recapOf(r).failed > 0)) return EXIT.failed;
  if (check && runs.some(r => recapOf(r).changed > 0)) return EXIT.pending;
  return EXIT.ok;
}

/**
 * Does one host's work on its session, then closes the session (run lock released, connection
 * closed). An error the work throws outside any step (a step that cannot even be built, facts
 * that cannot be listed) is that host's failure: shown, in its recap and in the exit code, and
 * the other hosts carry on.
 */
export async function withSession(session: HostSession, work: () => Promise<void>): Promise<HostRun> {
  const started = Date.now();
  try {
    await work();
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    session.report({ step: 'run', status: 'failed', detail: redact(message), changes: [], diffs: [], seconds: (Date.now() - started) / 1000 });
  }
  return session.close();
}

/** Connects, runs the steps and, when they converged, the checks. */
export async function converge(session: HostSession, steps: Step[], checks: Check[] | undefined): Promise<void> {
  if (!(await session.open({ steps, phase: { checks } }))) return;
  const converged = await session.run(steps, { checks });
  if (converged && checks) await session.checks(checks);
}

/** The whole life of a plain script: parse, load, connect, run steps and checks, recap, exit. */
export async function runScript(spec: ScriptSpec): Promise<never> {
  const args = commandLine(spec);
  const { inventory, hosts } = loadHosts(args);
  const reporter = makeReporter(args, inventory, hosts, spec.script);
  const run: RunInfo = { args, local: (...parts) => localDir(inventory, ...parts) };
  const runs = await forEachHost(hosts, Number(args.parallel ?? 10), host => {
    const session = sessionFor(host, args, reporter, spec.script);
    return withSession(session, () => converge(session, spec.steps(host, run), args.check ? undefined : spec.checks?.(host)));
  });
  const code = exitCode(runs, Boolean(args.check));
  reporter.recap(runs, { script: spec.script, check: Boolean(args.check), exit: code });
  process.exit(code);
}
