// Facts, and the one remote command that reads many of them; what a step is (its phases are in
// plan.ts: facts in, changes out) and what it leaves for later steps of the same run (HostMemo).
import type { Host } from './inventory.ts';
import type { Connection } from './ssh.ts';
import type { Phase } from './plan.ts';
import { lines, script, sh } from './shell.ts';
import type { Script } from './shell.ts';

export interface Fact<T> {
  /**
   * Unique per command: two facts with the same key are the same reading, each parsing its own
   * view of it (e.g. the engine's version and its containers come from one request).
   */
  key: string;
  /** A POSIX sh snippet, run as root; its stdout is parsed. Its stderr is discarded. */
  command: Script;
  parse: (stdout: string, exitCode: number) => T;
  /**
   * The command waits on a service or the network (HTTP, DNS, the database) rather than reading
   * local files: it runs beside the others instead of after them.
   */
  waits?: boolean;
}

type Reading = { stdout: string; code: number };

/** What the host printed for each fact's command, by key; a fact's value is parsed when asked. */
export class Readings {
  private readonly byKey = new Map<string, Reading>();

  has(key: string): boolean {
    return this.byKey.has(key);
  }

  get<T>(fact: Fact<T>): T | undefined {
    const reading = this.byKey.get(fact.key);
    if (!reading) return undefined;
    return fact.parse(reading.stdout, reading.code);
  }

  record(key: string, stdout: string, code: number): void {
    this.byKey.set(key, { stdout, code });
  }

  /** Moves the readings whose keys match into a new Readings. */
  take(matches: (key: string) => boolean): Readings {
    const taken = new Readings();
    for (const [key, reading] of this.byKey) {
      if (!matches(key)) continue;
      taken.byKey.set(key, reading);
      this.byKey.delete(key);
    }
    return taken;
  }

  clear(): void {
    this.byKey.clear();
  }
}

export type Status = 'ok' | 'changed' | 'failed' | 'skipped';
export interface StepResult {
  step: string;
  status: Status;
  /** ok: why nothing needed doing; changed: what was done; failed: the error; skipped: why. */
  detail: string;
  changes: string[];
  diffs: string[];
  seconds: number;
}

export interface Step {
  name: string;
  /** Facts the step will read, gathered for all steps of a run in one remote command. */
  facts?: (host: Host) => Array<Fact<unknown>>;
  /**
   * Local work the step will need once the host has answered (e.g. loading a library), started
   * while the host reads state so that it costs no time of its own.
   */
  warm?: () => Promise<unknown>;
  /** The step as data: facts in, changes out (plan.ts). The session applies the changes. */
  phases: Phase[];
}

export class SkipStep extends Error {}

/** Where the tool keeps its own per-droplet state (the run lock, pending reloads, applied marks). */
export const STATE_DIR = '/var/lib/convex-ops';

/** A name in a host's memo, carrying the type of the value kept under it. */
export interface MemoKey<T> {
  readonly name: string;
  /** Never set: it only ties the key to its value's type. */
  readonly valueType?: T;
}

export function memoKey<T>(name: string): MemoKey<T> {
  return { name };
}

/**
 * What one step of a host leaves for a later step, or for the runbook, within one run (e.g. that
 * apt-get update ran, the backup a step made). Each read has the type its key was made with.
 */
export class HostMemo {
  private readonly values = new Map<MemoKey<unknown>, unknown>();

  has(key: MemoKey<unknown>): boolean {
    return this.values.has(key);
  }

  get<T>(key: MemoKey<T>): T | undefined {
    return this.values.get(key) as T | undefined;
  }

  /** The value a step that succeeded must have left. */
  required<T>(key: MemoKey<T>): T {
    if (!this.values.has(key)) throw new Error(`${key.name}: no step of this run recorded it`);
    return this.values.get(key) as T;
  }

  set<T>(key: MemoKey<T>, value: T): void {
    this.values.set(key, value);
  }
}

export const pendingHandlers: Fact<string[]> = {
  key: 'pending-handlers',
  command: sh`ls -1 ${`${STATE_DIR}/pending`} 2>/dev/null`,
  parse: out => out.split('\n').filter(Boolean),
};

const BEGIN = '@@convex-ops-fact-begin';
const END = '@@convex-ops-fact-end';

/** One of each key: facts with the same key are one reading. */
function uniqueFacts(facts: Array<Fact<unknown>>): Array<Fact<unknown>> {
  return [...new Map(facts.map(f => [f.key, f])).values()];
}

/**
 * The one remote command that reads many facts, each printing a delimited section (its output,
 * then its exit code) that recordFacts parses on its own. Facts that read local state run one
 * after another in one background job: each is a few processes that cost more CPU than they
 * wait, and on a converged run every process counts (in parallel, the forks and the contention
 * for a small droplet's CPUs cost more than they overlap). Facts that wait run each in a job of
 * their own, beside that one. Each job writes its own temporary file; one `cat` prints them all.
 */
export function factsScript(facts: Array<Fact<unknown>>): Script {
  const section = (f: Fact<unknown>, i: number) => script`printf '%s\\n' ${sh`${`${BEGIN} ${i}`}`}; ( ${f.command}\n) 2>/dev/null; printf '\\n%s %s\\n' ${sh`${`${END} ${i}`}`} "$?"`;
  const indexed = uniqueFacts(facts).map((f, i) => ({ f, i }));
  const local = indexed.filter(({ f }) => !f.waits);
  const jobs = [...(local.length ? [local] : []), ...indexed.filter(({ f }) => f.waits).map(x => [x])];
  return lines(
    sh`d=$(mktemp -d) || exit 1`,
    sh`trap 'rm -rf "$d"' EXIT`,
    ...jobs.map((job, j) => script`{\n${lines(...job.map(({ f, i }) => section(f, i)))}\n} >"$d/${sh`${String(j).padStart(4, '0')}`}" &`),
    sh`wait`,
    sh`cat "$d"/*`,
  );
}

/** Records what factsScript(facts) printed, one reading per fact. */
export function recordFacts(host: string, stdout: string, facts: Array<Fact<unknown>>, into: Readings): void {
  for (const [i, fact] of uniqueFacts(facts).entries()) {
    const start = stdout.indexOf(`${BEGIN} ${i}\n`);
    const endMarker = `\n${END} ${i} `;
    const end = stdout.indexOf(endMarker, start);
    if (start < 0 || end < 0) throw new Error(`${host}: could not read state "${fact.key}"`);
    const body = stdout.slice(start + BEGIN.length + String(i).length + 2, end);
    const code = Number.parseInt(stdout.slice(end + endMarker.length), 10);
    into.record(fact.key, body, code);
  }
}

/** Reads the facts in one remote command. */
export async function gatherFacts(conn: Connection, facts: Array<Fact<unknown>>, into: Readings): Promise<void> {
  if (facts.length === 0) return;
  const { stdout } = await conn.run(factsScript(facts), 'read state');
  recordFacts(conn.host.name, stdout, facts, into);
}
