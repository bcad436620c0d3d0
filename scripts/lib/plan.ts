// A step's plan is data: from facts read on the host, a pure function returns the changes to
// make, each a label, the remote script that makes it, its stdin, the diff it shows and the
// pending handler it arms. The session applies them (or, in a dry run, only prints them), so a
// dry run and a real run are the same code, and "changed" is what was applied.
import type { Host } from './inventory.ts';
import type { Fact, HostMemo } from './step.ts';
import { STATE_DIR, SkipStep } from './step.ts';
import type { RunResult } from './ssh.ts';
import type { FileState, DesiredFile } from './files.ts';
import { MANAGED_MARKER, atomicWriteScript, maskedEnvDiff, sha256, unifiedDiff } from './files.ts';
import type { Packages } from './system.ts';
import { aptInstallScript } from './system.ts';
import { lines, script, sh } from './shell.ts';
import type { Script } from './shell.ts';

export interface Change {
  /** What is done, as the output names it: "create role convex". */
  label: string;
  /** The POSIX sh script that makes the change, run as root on the host (none: local work only). */
  script?: Script;
  stdin?: string;
  /** The diff of a file this change writes (masked before it is shown). */
  diff?: string;
  /** A pending handler recorded on the host in the same command, before the script runs. */
  arms?: string;
  /** The pending handler this change performs: its mark is removed once the script succeeded. */
  clears?: string;
  /** The script's output is shown as progress while it runs (apt, pulls, certbot). */
  streams?: boolean;
  /**
   * The change could shut SSH out (a firewall): once its script ran, a new SSH connection must
   * get in. If none can, `undo` runs through the connection still open (established connections
   * stay allowed) and the change fails with `failure(why)`; if one can, `proven` runs, so what it
   * records is only ever recorded after the proof.
   */
  sshProbe?: { undo: Script; proven?: Script; failure: (why: string) => string };
  /**
   * Work on this machine once the script succeeded (e.g. the admin key written to .secrets/),
   * given the script's stdout; what it returns, if anything, replaces the label in the output.
   * In a dry run it is not called.
   */
  after?: (stdout: string, memo: HostMemo) => string | void;
  /**
   * The error to report when the script fails, made from its output: a script that does several
   * things (pull, start, wait) says which of them failed and why. Undefined, or nothing returned:
   * "<host>: <label> failed (exit n)" with the script's last lines of stderr.
   */
  failure?: (result: RunResult, memo: HostMemo) => string | undefined;
}

/** A reload or restart that changes arm and one change performs (Ansible's handlers). */
export interface Handler {
  name: string;
  label: string;
  script: Script;
  /** What the change that performs it does here afterwards (Change.after). */
  after?: Change['after'];
}

/** Facts a phase reads, by name: a fact, or a list of them. */
export type FactSpec = Record<string, Fact<unknown> | Array<Fact<unknown>>>;

/** The values of a FactSpec's facts, under the same names. */
export type FactValues<S extends FactSpec> = {
  [K in keyof S]: S[K] extends Array<Fact<infer T>> ? T[] : S[K] extends Fact<infer T> ? T : unknown;
};

/**
 * One snapshot of facts and the changes planned from it. A step whose later decisions depend on
 * state only an earlier change creates (PostgreSQL's cluster exists only once it is installed)
 * has several phases: after a phase changed something, the facts of all later phases are read
 * again, in one command. In a dry run every phase is planned from the first snapshot.
 */
export interface Phase<S extends FactSpec = FactSpec> {
  facts: (host: Host) => S;
  // NoInfer: the types come from `facts` alone, so a plan written as a named function checks against them.
  plan: (facts: NoInfer<FactValues<S>>, host: Host) => Change[];
  /** What the step reports when nothing needed doing (the last phase's counts). */
  ok?: (facts: NoInfer<FactValues<S>>, host: Host) => string;
  /** Warnings for the operator, drawn from the same facts. */
  warnings?: (facts: NoInfer<FactValues<S>>, host: Host) => string[];
}

/** Declares a phase, inferring the types of its facts' values. */
export function phase<S extends FactSpec>(p: Phase<S>): Phase {
  return p as unknown as Phase;
}

/** The facts of a phase's FactSpec, flattened, to read in one command. */
export function specFacts(spec: FactSpec): Array<Fact<unknown>> {
  return Object.values(spec).flat();
}

/** The values of a FactSpec's facts, read through `get` (the session's readings). */
export function factValues(spec: FactSpec, get: (fact: Fact<unknown>) => unknown): FactValues<FactSpec> {
  const out: Record<string, unknown> = {};
  for (const [name, facts] of Object.entries(spec)) out[name] = Array.isArray(facts) ? facts.map(get) : get(facts);
  return out as FactValues<FactSpec>;
}

/** Ends the step as skipped, with the reason (e.g. a host without domains needs no nginx). */
export function skip(reason: string): never {
  throw new SkipStep(reason);
}

/** The file on the host that records a handler as pending. */
export const pendingMark = (handler: string) => `${STATE_DIR}/pending/${handler}`;

/**
 * The script a change runs once its handler bookkeeping is added: the pending mark is written
 * before the change (so a run that dies in between leaves it for the next run: Ansible's
 * lost-handler bug, ansible#4766, cannot happen), and cleared only after the handler succeeded.
 */
export function changeScript(change: Change): Script | undefined {
  if (change.script === undefined) return undefined;
  // The script runs as a statement of its own, never left of && or ||, where sh would ignore a
  // `set -e` inside it.
  return lines(
    ...(change.arms ? [sh`mkdir -p ${`${STATE_DIR}/pending`} && touch ${pendingMark(change.arms)} || exit 1`] : []),
    script`( ${change.script}
)`,
    ...(change.clears ? [sh`rc=$?`, sh`[ "$rc" -ne 0 ] || rm -f ${pendingMark(change.clears)}`, sh`exit "$rc"`] : []),
  );
}

/**
 * The handler's change, added after `changes` when one of them arms it or an earlier run left it
 * pending; nothing otherwise.
 */
export function withHandler(changes: Change[], handler: Handler, pending: string[]): Change[] {
  const needed = pending.includes(handler.name) || changes.some(c => c.arms === handler.name);
  if (!needed) return changes;
  return [...changes, { label: handler.label, script: handler.script, clears: handler.name, ...(handler.after ? { after: handler.after } : {}) }];
}

/**
 * The changes that make a file on the host what `want` says: none when it already is. A file
 * convex-ops did not write is kept aside (mode 0600) when it is first replaced. `arms` names the
 * handler a content change needs (a mode change needs none).
 */
export function fileChanges(state: FileState, want: DesiredFile, arms?: string): Change[] {
  const owner = want.owner ?? 'root';
  const group = want.group ?? owner;
  if (state.kind === 'other') throw new Error(`${want.path} exists but is a ${state.type}, not a regular file. Move it away, then run again.`);
  const label = want.label ?? want.path;
  const changes: Change[] = [];
  if (state.stale?.length) {
    changes.push({
      label: `remove ${state.stale.length === 1 ? 'a temporary file' : `${state.stale.length} temporary files`} of ${label} left by an interrupted run`,
      script: sh`rm -f ${state.stale}`,
    });
  }
  if (state.kind === 'file' && state.content === want.content) {
    if (state.mode !== want.mode.replace(/^0/, '') || state.owner !== owner || state.group !== group) {
      changes.push({ label: `set ${label} to mode ${want.mode} ${owner}:${group}`, script: sh`chmod ${want.mode} ${want.path} && chown ${`${owner}:${group}`} ${want.path}` });
    }
    return changes;
  }
  const before = state.kind === 'file' ? state.content : '';
  const foreign = state.kind === 'file' && !state.content.includes(MANAGED_MARKER);
  changes.push({
    label: state.kind === 'absent' ? `create ${label}` : foreign ? `replace ${label} (the original is kept aside)` : `update ${label}`,
    script: atomicWriteScript(want, foreign, sha256(want.content)),
    stdin: want.content,
    diff: want.secret ? maskedEnvDiff(want.path, before, want.content) : unifiedDiff(want.path, before, want.content),
    ...(arms ? { arms } : {}),
  });
  return changes;
}

/**
 * The change that installs what is missing of `wanted` (apt alternatives joined by "|"), or
 * none. `label` names the packages when the alternatives would say too much.
 */
export function packageChanges(packages: Packages, wanted: string[], label?: string): Change[] {
  const missing = wanted.filter(entry => !entry.split('|').some(p => packages.installed.has(p)));
  return missing.length ? [installChange(missing, label)] : [];
}

/**
 * The change that installs `entries` as they are (apt alternatives joined by "|"), for a step
 * that decided from other facts what to install (an installed package may lack what is wanted
 * of it: Debian 13's docker.io without the docker-cli it only recommends).
 */
export function installChange(entries: string[], label?: string): Change {
  // apt takes the first alternative this release has: Debian 12 has no docker-compose-v2.
  const named = (entry: string) => {
    const [first, ...others] = entry.split('|');
    return others.length ? `${first} (or ${others.join(', ')})` : first;
  };
  return { label: label ?? `install ${entries.map(named).join(', ')}`, script: aptInstallScript(entries), streams: true };
}
