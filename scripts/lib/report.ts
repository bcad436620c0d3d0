// What a run tells the operator: a line per step with its status and duration, progress during
// long work, diffs under --check/--diff, a recap per host (as Ansible's PLAY RECAP), or one JSON
// document under --json. Everything is redacted, and everything is appended to a local log.
import { appendFileSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { chalk } from 'zx';
import { redact } from './redact.ts';
import type { Status, StepResult } from './step.ts';

export interface HostRun {
  host: string;
  steps: StepResult[];
  connections: number;
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

export class Reporter {
  readonly logPath: string;
  private readonly json: boolean;
  private readonly showDiffs: boolean;
  private readonly colour: boolean;
  private readonly hostWidth: number;
  private readonly started = new Map<string, number>();
  private readonly lastProgress = new Map<string, number>();

  constructor(opts: { json: boolean; showDiffs: boolean; logPath: string; hosts: string[]; script: string; argv: string[] }) {
    this.json = opts.json;
    this.showDiffs = opts.showDiffs;
    this.logPath = opts.logPath;
    this.colour = Boolean(process.stdout.isTTY) && !process.env.NO_COLOR && !process.env.CI;
    chalk.level = this.colour ? chalk.level || 1 : 0;
    this.hostWidth = Math.max(...opts.hosts.map(h => h.length), 4);
    mkdirSync(dirname(this.logPath), { recursive: true });
    this.log(`\n=== ${new Date().toISOString()} ${opts.script} ${redact(opts.argv.join(' '))}`);
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

  stepStarted(host: string, step: string): void {
    this.started.set(`${host}/${step}`, Date.now());
  }

  /** Long work shows what it is doing and for how long, at most every few seconds per host. */
  progress(host: string, step: string, text: string): void {
    const key = `${host}/${step}`;
    const now = Date.now();
    const throttle = process.stdout.isTTY ? 3000 : 10000;
    const last = this.lastProgress.get(key);
    if (last !== undefined && now - last < throttle) return;
    this.lastProgress.set(key, now);
    const elapsed = ((now - (this.started.get(key) ?? now)) / 1000).toFixed(0);
    this.say(`${this.prefix(host)}  ${chalk.dim(`… ${step}: ${text.trim().split('\n').pop()?.slice(0, 100) ?? ''} (${elapsed}s)`)}`);
  }

  warn(host: string | undefined, text: string): void {
    this.say(`${host ? this.prefix(host) + '  ' : ''}${chalk.yellow('warning:')} ${text}`);
  }

  stepFinished(host: string, result: StepResult): void {
    const status = STATUS_COLOUR[result.status](result.status.padEnd(7));
    const detail = result.detail ? `  ${result.status === 'failed' ? chalk.red(result.detail) : chalk.dim(result.detail)}` : '';
    this.say(`${this.prefix(host)}  ${result.step.padEnd(22)} ${status} ${chalk.dim(`${result.seconds.toFixed(2)}s`)}${detail}`);
    if (this.showDiffs) for (const diff of result.diffs) this.say(colourDiff(diff));
  }

  recap(runs: HostRun[], extra: Record<string, unknown> = {}): void {
    if (this.json) {
      const document = {
        ...extra,
        hosts: runs.map(run => ({ host: run.host, steps: run.steps, recap: recapOf(run), connections: run.connections, commands: run.commands, seconds: run.seconds })),
        recap: Object.fromEntries(runs.map(run => [run.host, recapOf(run)])),
        log: this.logPath,
      };
      const text = redact(JSON.stringify(document, null, 2));
      this.log(text);
      process.stdout.write(text + '\n');
      return;
    }
    this.say(`\n${chalk.bold('RECAP')}`);
    for (const run of runs) {
      const r = recapOf(run);
      const part = (name: keyof Recap, colour: (s: string) => string) => (r[name] ? colour(`${name}=${r[name]}`) : `${name}=0`);
      this.say(
        `${this.prefix(run.host)}  ${part('ok', chalk.green)}  ${part('changed', chalk.yellow)}  ${part('failed', chalk.red)}  ${part('skipped', chalk.cyan)}  ` +
          chalk.dim(`${run.seconds.toFixed(1)}s, ${run.connections} connection, ${run.commands} commands`),
      );
    }
    this.say(chalk.dim(`log: ${this.logPath}`));
  }
}

function colourDiff(diff: string): string {
  return diff
    .split('\n')
    .map(line => (line.startsWith('+') && !line.startsWith('+++') ? chalk.green(line) : line.startsWith('-') && !line.startsWith('---') ? chalk.red(line) : line))
    .join('\n');
}
