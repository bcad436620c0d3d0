// What a run tells the operator: a line per step with its status and duration, progress during
// long work, diffs under --check/--diff, a recap per host (as Ansible's PLAY RECAP), or one JSON
// document under --json. Everything is redacted, and everything is appended to a local log.
import { appendFileSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { chalk } from 'zx';
import { redact } from './redact.ts';
import type { Status, StepResult } from './step.ts';

/** "1 command", "4 commands". */
const counted = (n: number, noun: string) => `${n} ${noun}${n === 1 ? '' : 's'}`;

export interface HostRun {
  host: string;
  steps: StepResult[];
  connections: number;
  /** The bastions its connection goes through, e.g. "bastion". */
  via?: string;
  commands: number;
  seconds: number;
}

export interface Recap { ok: number; changed: number; failed: number; skipped: number }

export function recapOf(run: HostRun): Recap {
  const count = (s: Status) => run.steps.filter(r => r.status === s).length;
  return { ok: count('ok'), changed: count('changed'), failed: count('failed'), skipped: count('skipped') };
}

const STATUS_COLOUR: Record<Status, (s: string) => string> = {
  ok: s => chalk.green(s),
  changed: s => chalk.yellow(s),
  failed: s => chalk.red(s),
  skipped: s => chalk.cyan(s),
};

/** Time as the reporter sees it: the real one, or in a test one that is moved on by hand. */
export interface Clock {
  now(): number;
  /** Calls tick every `ms` until the returned stop() is called; never keeps the process alive. */
  every(ms: number, tick: () => void): () => void;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  every: (ms, tick) => {
    const timer = setInterval(tick, ms);
    timer.unref();
    return () => clearInterval(timer);
  },
};

export class Reporter {
  readonly logPath: string;
  private readonly json: boolean;
  private readonly showDiffs: boolean;
  private readonly colour: boolean;
  private readonly hostWidth: number;
  private readonly manyHosts: boolean;
  private readonly started = new Map<string, number>();
  private readonly lastProgress = new Map<string, number>();
  /** The newest progress line that arrived too soon after the last one shown. */
  private readonly unshown = new Map<string, string>();
  /** Per host, what stops the timer that shows a step is still working when it prints nothing. */
  private readonly heartbeats = new Map<string, () => void>();
  private readonly throttle: number;
  private readonly clock: Clock;

  constructor(opts: { json: boolean; showDiffs: boolean; logPath: string; hosts: string[]; script: string; argv: string[]; clock?: Clock }) {
    this.json = opts.json;
    this.clock = opts.clock ?? systemClock;
    this.showDiffs = opts.showDiffs;
    this.logPath = opts.logPath;
    // Colour only where a person reads the human output: the stream it goes to is a terminal,
    // and neither NO_COLOR, CI nor TERM=dumb says otherwise. FORCE_COLOR forces it.
    const human = this.json ? process.stderr : process.stdout;
    const env = process.env;
    this.colour = env.FORCE_COLOR !== undefined && env.FORCE_COLOR !== '0' ? true : Boolean(human.isTTY) && !env.NO_COLOR && !env.CI && env.TERM !== 'dumb';
    chalk.level = this.colour ? chalk.level || 1 : 0;
    this.throttle = human.isTTY ? 3000 : 10000;
    this.hostWidth = Math.max(...opts.hosts.map(h => h.length), 4);
    this.manyHosts = opts.hosts.length > 1;
    mkdirSync(dirname(this.logPath), { recursive: true });
    this.log(`\n=== ${new Date(this.clock.now()).toISOString()} ${opts.script} ${redact(opts.argv.join(' '))}`);
  }

  private log(line: string): void {
    appendFileSync(this.logPath, redact(line).replace(/\x1b\[[0-9;]*m/g, '') + '\n', { mode: 0o600 });
  }

  /** Human output: to stdout normally, to stderr under --json so stdout stays parseable. */
  say(line: string): void {
    const text = redact(line);
    this.log(text);
    (this.json ? process.stderr : process.stdout).write(text + '\n');
  }

  private prefix(host: string): string {
    return chalk.bold(host.padEnd(this.hostWidth));
  }

  /**
   * A step begins. Until it finishes, a step that prints nothing for a while (a quiet image pull,
   * a health wait, reading state on a slow host) still shows that it is working, with elapsed time.
   */
  stepStarted(host: string, step: string): void {
    const key = `${host}/${step}`;
    const now = this.clock.now();
    this.started.set(key, now);
    this.stopHeartbeat(host);
    const stop = this.clock.every(this.throttle, () => {
      if (this.clock.now() - (this.lastProgress.get(key) ?? now) < this.throttle) return;
      // The newest line the command printed meanwhile, else a plain sign of life.
      const line = this.unshown.get(key) ?? 'still working';
      this.unshown.delete(key);
      this.show(host, step, line);
    });
    this.heartbeats.set(host, stop);
  }

  private stopHeartbeat(host: string): void {
    this.heartbeats.get(host)?.();
    this.heartbeats.delete(host);
  }

  /** Long work shows what it is doing and for how long, at most every few seconds per host. */
  progress(host: string, step: string, text: string): void {
    const key = `${host}/${step}`;
    // The last line with something on it: apt and compose end chunks with blank lines.
    const line = text.split('\n').map(l => l.trim()).filter(Boolean).pop();
    if (!line) return;
    const last = this.lastProgress.get(key);
    if (last !== undefined && this.clock.now() - last < this.throttle) {
      this.unshown.set(key, line); // shown by the step's timer if nothing newer comes
      return;
    }
    this.unshown.delete(key);
    this.show(host, step, line);
  }

  private show(host: string, step: string, line: string): void {
    const key = `${host}/${step}`;
    const now = this.clock.now();
    this.lastProgress.set(key, now);
    const elapsed = ((now - (this.started.get(key) ?? now)) / 1000).toFixed(0);
    this.say(`${this.prefix(host)}  ${chalk.dim(`… ${step}: ${line.slice(0, 100)} (${elapsed}s)`)}`);
  }

  /** Lines after the first of a multi-line message keep the host's name in front, so that with
   * several hosts every line says which host it is about. */
  private continued(host: string, text: string, indent: string): string {
    const [first, ...rest] = text.split('\n');
    return [first, ...rest.map(line => `${chalk.dim(host.padEnd(this.hostWidth))}  ${indent}${line}`)].join('\n');
  }

  warn(host: string | undefined, text: string): void {
    this.say(`${host ? this.prefix(host) + '  ' : ''}${chalk.yellow('warning:')} ${text}`);
  }

  stepFinished(host: string, result: StepResult): void {
    this.stopHeartbeat(host);
    const status = STATUS_COLOUR[result.status](result.status.padEnd(7));
    const head = `${this.prefix(host)}  ${result.step.padEnd(22)} ${status} ${chalk.dim(`${result.seconds.toFixed(2)}s`)}`;
    const detail = result.detail ? `  ${this.continued(host, result.status === 'failed' ? chalk.red(result.detail) : chalk.dim(result.detail), '    ')}` : '';
    this.say(head + detail);
    if (this.showDiffs) {
      // One host: the diff as is (it can be saved as a patch). Several: each line names its host.
      for (const diff of result.diffs) this.say(this.manyHosts ? this.continued(host, `\n${colourDiff(diff.replace(/\n$/, ''))}`, '| ').slice(1) : colourDiff(diff));
    }
  }

  /** A JSON document on stdout (the only thing there under --json), redacted and logged. */
  document(value: unknown): void {
    const text = redact(JSON.stringify(value, null, 2));
    this.log(text);
    process.stdout.write(text + '\n');
  }

  /**
   * The recap per host, as Ansible's PLAY RECAP, with the first line of each failure. Under
   * --json it goes to stderr and the JSON document (the same counts) to stdout.
   */
  recap(runs: HostRun[], extra: Record<string, unknown> = {}): void {
    for (const host of [...this.heartbeats.keys()]) this.stopHeartbeat(host);
    this.say(`\n${chalk.bold('RECAP')}`);
    for (const run of runs) {
      const r = recapOf(run);
      const part = (name: keyof Recap, colour: (s: string) => string) => (r[name] ? colour(`${name}=${r[name]}`) : `${name}=0`);
      this.say(
        `${this.prefix(run.host)}  ${part('ok', chalk.green)}  ${part('changed', chalk.yellow)}  ${part('failed', chalk.red)}  ${part('skipped', chalk.cyan)}  ` +
          chalk.dim(`${run.seconds.toFixed(1)}s, ${counted(run.connections, 'connection')}${run.via ? ` via ${run.via}` : ''}, ${counted(run.commands, 'command')}`),
      );
      for (const failed of run.steps.filter(s => s.status === 'failed')) {
        this.say(`${this.prefix(run.host)}  ${chalk.red(`failed at ${failed.step}:`)} ${failed.detail.split('\n')[0]}`);
      }
    }
    this.say(chalk.dim(`log: ${this.logPath}`));
    if (this.json) {
      this.document({
        ...extra,
        hosts: runs.map(run => ({ host: run.host, steps: run.steps, recap: recapOf(run), connections: run.connections, ...(run.via ? { via: run.via } : {}), commands: run.commands, seconds: run.seconds })),
        recap: Object.fromEntries(runs.map(run => [run.host, recapOf(run)])),
        log: this.logPath,
      });
    }
  }
}

function colourDiff(diff: string): string {
  return diff
    .split('\n')
    .map(line => (line.startsWith('+') && !line.startsWith('+++') ? chalk.green(line) : line.startsWith('-') && !line.startsWith('---') ? chalk.red(line) : line))
    .join('\n');
}
