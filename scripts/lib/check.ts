// A check is a post-condition: a remote probe plus a verdict on its output. All checks of a run
// go to the host as one command; each file in checks/ holds one.
import type { Host } from './inventory.ts';
import type { Fact, StepResult } from './step.ts';
import { gatherFacts } from './step.ts';
import type { Connection } from './ssh.ts';

export interface Check {
  name: string;
  appliesTo?: (host: Host) => boolean;
  probe: (host: Host) => string;
  /** Returns the failure, or undefined when the condition holds. */
  verdict: (output: string, exitCode: number, host: Host) => string | undefined;
}

export async function runChecks(conn: Connection, checks: Check[], host: Host = conn.host): Promise<StepResult[]> {
  const applicable = checks.filter(c => c.appliesTo?.(host) ?? true);
  const started = Date.now();
  const facts: Array<Fact<string | undefined>> = applicable.map(c => ({
    key: `check:${c.name}`,
    command: c.probe(host),
    parse: (out, code) => c.verdict(out, code, host),
  }));
  const results = new Map<string, unknown>();
  await gatherFacts(conn, facts, results);
  const seconds = (Date.now() - started) / 1000 / Math.max(applicable.length, 1);
  return applicable.map(c => {
    const failure = results.get(`check:${c.name}`) as string | undefined;
    return { step: `check ${c.name}`, status: failure ? 'failed' : 'ok', detail: failure ?? '', changes: [], diffs: [], seconds };
  });
}
