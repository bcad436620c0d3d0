// One host for one run: its single SSH connection, its run lock, its fact cache, and the steps
// and checks run on it in order. A failed step ends the host's run; other hosts carry on.
import type { Host } from './inventory.ts';
import { Connection, RemoteError } from './ssh.ts';
import { acquireRunLock } from './lock.ts';
import { factsScript, gatherFacts, HostMemo, Readings, recordFacts, SkipStep, pendingHandlers } from './step.ts';
import type { Fact, Step, StepResult } from './step.ts';
import { changeScript, factValues, specFacts } from './plan.ts';
import type { Change } from './plan.ts';
import type { Check } from './check.ts';
import { isProbeKey, probeFacts, runChecks } from './check.ts';
import type { HostRun, Reporter } from './report.ts';
import { redact } from './redact.ts';

/** One phase of a run on the session's host, e.g. a promotion's converge and its rollback. */
export interface PhaseOptions {
  /** The host as this phase sees it (e.g. with other images); default the session's host. */
  host?: Host;
  /** Run even though an earlier phase of this session failed (a rollback). */
  afterFailure?: boolean;
  /**
   * The checks that will follow these steps. Their probes are read with the steps' state, in
   * the same remote command; when no step changes anything, the host after the steps is the
   * host those probes read, and checks() judges those readings instead of asking again.
   * Any change (or a dry run) discards them, and checks() reads the host afresh.
   */
  checks?: Check[];
}

/** What one step changed (or, in a dry run, would change), and the diffs of the files. */
export interface Outcome {
  changes: string[];
  diffs: string[];
}

export interface SessionOptions {
  /** --check: plan and show every change, apply none. */
  dryRun: boolean;
  acceptNew: boolean;
  lockTimeout: number;
  script: string;
  reporter: Reporter;
}

export class HostSession {
  readonly host: Host;
  readonly results: StepResult[] = [];
  readonly memo = new HostMemo();
  conn?: Connection;
  private readonly options: SessionOptions;
  private readonly cache = new Readings();
  private releaseLock?: () => void;
  private readonly started = Date.now();
  /** Probe readings taken with the state of the last run() that changed nothing. */
  private readings?: Readings;
  /** The cache holds what open() read under the lock for the first run(). */
  private prefetched = false;

  constructor(host: Host, options: SessionOptions) {
    this.host = host;
    this.options = options;
  }

  /** The bastions the connection goes through, as the recap names them. */
  private get via(): string | undefined {
    return this.host.jump?.length ? this.host.jump.map(hop => hop.name).join(' → ') : undefined;
  }

  get failed(): boolean {
    return this.results.some(r => r.status === 'failed');
  }

  /**
   * Connects and (except for a dry run, which must write nothing) takes the run lock. The facts
   * of `first`, the first run() to come, are read under the lock in the same command, while
   * its steps' local preparations run here.
   */
  async open(first?: { steps: Step[]; phase?: PhaseOptions }): Promise<boolean> {
    return this.record('connect', async () => {
      const warming = Promise.all((first?.steps ?? []).map(s => s.warm?.()));
      this.conn = await Connection.open(this.host, { acceptNew: this.options.acceptNew });
      if (!this.options.dryRun) {
        const prefetch = first ? this.factsFor(first.steps, first.phase) : [];
        const lock = await acquireRunLock(this.conn, {
          waitSeconds: this.options.lockTimeout,
          script: this.options.script,
          read: prefetch.length ? factsScript(prefetch) : undefined,
          onWait: holder => this.options.reporter.warn(this.host.name, `${this.host.name} is being changed by ${holder}; waiting up to ${this.options.lockTimeout}s`),
        });
        this.releaseLock = lock.release;
        if (lock.read !== undefined) {
          recordFacts(this.host.name, lock.read, prefetch, this.cache);
          this.prefetched = true;
        }
      }
      await warming;
      return `${this.host.user}@${this.host.address}:${this.host.port}${this.via ? ` via ${this.via}` : ''}`;
    });
  }

  /** Every fact run() reads for these steps: theirs, pending handlers, and the checks' probes. */
  factsFor(steps: Step[], phase: PhaseOptions = {}): Array<Fact<unknown>> {
    const host = phase.host ?? this.host;
    const probes = phase.checks && !this.options.dryRun ? probeFacts(phase.checks, host) : [];
    return [pendingHandlers, ...steps.flatMap(s => [...(s.facts?.(host) ?? []), ...s.phases.flatMap(p => specFacts(p.facts(host)))]), ...probes];
  }

  /** Runs steps in order, stopping at the first failure. Facts for all of them are read at once. */
  async run(steps: Step[], phase: PhaseOptions = {}): Promise<boolean> {
    if (!this.conn || (this.failed && !phase.afterFailure)) return false;
    const conn = this.conn;
    const host = phase.host ?? this.host;
    this.readings = undefined;
    // Each run reads its facts afresh, but for those open() has just read under the lock.
    const facts = this.factsFor(steps, phase).filter(f => !(this.prefetched && this.cache.has(f.key)));
    this.prefetched = false;
    const prefetch = await this.record('read state', async () => {
      const reading = gatherFacts(conn, facts, this.cache);
      // While the host reads, the steps' local preparations run.
      const warming = Promise.all(steps.map(s => s.warm?.()));
      await Promise.all([reading, warming]);
      return '';
    }, { quiet: true });
    // Probe readings never serve as facts: they leave the cache, and are kept only while nothing changes.
    const readings = this.cache.take(isProbeKey);
    if (!prefetch) return false;
    let changed = false;
    for (const step of steps) {
      const outcome: Outcome = { changes: [], diffs: [] };
      const ok = await this.record(step.name, () => this.applyPhases(step, host, conn, outcome), { outcome });
      if (!ok) return false;
      changed ||= outcome.changes.length > 0;
    }
    if (!changed) this.readings = readings;
    return true;
  }

  /**
   * A fact's value on this host, typed: as the last run() read it when nothing has changed since
   * (no command), else read now. The promotion's runbook goes on from what its steps decided on.
   */
  async fact<T>(fact: Fact<T>): Promise<T> {
    if (!this.conn) throw new Error(`${this.host.name}: not connected`);
    if (!this.cache.has(fact.key)) await gatherFacts(this.conn, [fact], this.cache);
    return this.cache.get(fact) as T;
  }

  /** Runs the checks; returns whether all of them passed. */
  async checks(checks: Check[], phase: PhaseOptions = {}): Promise<boolean> {
    if (!this.conn || (this.failed && !phase.afterFailure)) return false;
    const conn = this.conn;
    const started = Date.now();
    const before = this.results.length;
    const readings = this.readings ?? new Readings();
    this.readings = undefined;
    try {
      const results = await runChecks(conn, checks, phase.host, readings);
      for (const result of results) this.report(result);
    } catch (error) {
      this.report({ step: 'checks', status: 'failed', detail: redact((error as Error).message), changes: [], diffs: [], seconds: (Date.now() - started) / 1000 });
    }
    return !this.results.slice(before).some(r => r.status === 'failed');
  }

  /**
   * Plans each phase of a step from its facts and applies the changes (a dry run only lists
   * them). After a phase changed something, the facts of the phases after it are read again,
   * together, in one command. Returns what the step says when nothing needed doing.
   */
  private async applyPhases(step: Step, host: Host, conn: Connection, outcome: Outcome): Promise<string | void> {
    const { phases } = step;
    const progress = (text: string) => this.options.reporter.progress(this.host.name, step.name, text);
    // Each phase's facts are made once: a step with several phases reads them phase after phase.
    const specs = phases.map(p => p.facts(host));
    let ok: string | undefined;
    for (const [i, phase] of phases.entries()) {
      const unread = specs.slice(i).flatMap(specFacts).filter(f => !this.cache.has(f.key));
      await gatherFacts(conn, unread, this.cache);
      const facts = factValues(specs[i]!, fact => this.cache.get(fact));
      let changes;
      try {
        changes = phase.plan(facts, host);
      } catch (error) {
        // A dry run plans later phases from the state before the changes it listed, which may
        // lack what those changes make (a cluster before PostgreSQL is installed): it stops there.
        if (this.options.dryRun && outcome.changes.length && !(error instanceof SkipStep)) return;
        throw error;
      }
      for (const warning of phase.warnings?.(facts, host) ?? []) this.options.reporter.warn(this.host.name, warning);
      for (const change of changes) {
        outcome.changes.push(change.label);
        // Masked here, once for every file: a diff of any file may show a secret the tool knows.
        if (change.diff) outcome.diffs.push(redact(change.diff));
        if (this.options.dryRun) continue;
        progress(change.label);
        const script = changeScript(change);
        const result = script ? await conn.run(script, change.label, { stdin: change.stdin, onOutput: change.streams ? progress : undefined, allowFail: change.failure !== undefined }) : undefined;
        if (result && result.code !== 0) throw new Error(change.failure?.(result, this.memo) ?? new RemoteError(this.host.name, change.label, result).message);
        if (change.sshProbe) await this.proveSsh(conn, host, change.sshProbe);
        const label = change.after?.(result?.stdout ?? '', this.memo);
        if (label) outcome.changes[outcome.changes.length - 1] = label;
        // Whatever was read before may be stale now: later readings go back to the host.
        this.cache.clear();
      }
      if (changes.length === 0) ok = phase.ok?.(facts, host) ?? ok;
    }
    return ok;
  }

  /** A new SSH connection gets in after a change, or the change is undone and fails (Change.sshProbe). */
  private async proveSsh(conn: Connection, host: Host, probe: NonNullable<Change['sshProbe']>): Promise<void> {
    try {
      const fresh = await Connection.open(host, { acceptNew: false, retries: 1 });
      fresh.close();
    } catch (error) {
      await conn.run(probe.undo, 'undo the change that shut SSH out');
      throw new Error(probe.failure((error as Error).message));
    }
    if (probe.proven) await conn.run(probe.proven, 'record the proven change');
  }

  /** Runs one unit of work and records its result; returns false when it failed. */
  async record(name: string, work: () => Promise<string | void>, opts: { outcome?: Outcome; quiet?: boolean } = {}): Promise<boolean> {
    const started = Date.now();
    this.options.reporter.stepStarted(this.host.name, name);
    let result: StepResult;
    try {
      const reason = await work();
      const changes = opts.outcome?.changes ?? [];
      result = changes.length
        ? { step: name, status: 'changed', detail: (this.options.dryRun ? 'would: ' : '') + changes.join('; '), changes, diffs: opts.outcome?.diffs ?? [], seconds: 0 }
        : { step: name, status: 'ok', detail: reason ?? '', changes: [], diffs: [], seconds: 0 };
    } catch (error) {
      const e = error as Error;
      result = e instanceof SkipStep
        ? { step: name, status: 'skipped', detail: e.message, changes: [], diffs: [], seconds: 0 }
        : { step: name, status: 'failed', detail: redact(e.message), changes: opts.outcome?.changes ?? [], diffs: opts.outcome?.diffs ?? [], seconds: 0 };
    }
    result.seconds = (Date.now() - started) / 1000;
    if (!(opts.quiet && result.status === 'ok')) this.report(result);
    return result.status !== 'failed';
  }

  report(result: StepResult): void {
    this.results.push(result);
    this.options.reporter.stepFinished(this.host.name, result);
  }

  close(): HostRun {
    this.releaseLock?.();
    this.conn?.close();
    return {
      host: this.host.name,
      steps: this.results,
      connections: this.conn ? 1 : 0,
      ...(this.conn && this.via ? { via: this.via } : {}),
      commands: this.conn?.commands ?? 0,
      seconds: (Date.now() - this.started) / 1000,
    };
  }
}
