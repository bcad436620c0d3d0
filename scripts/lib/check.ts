// A check is a post-condition: a remote probe plus a verdict on its output. All checks of a run
// go to the host as one command; each file in checks/ holds one. Checks whose probes are the
// same command share one reading of it.
import type { Host } from './inventory.ts';
import type { Fact, StepResult } from './step.ts';
import { gatherFacts, Readings } from './step.ts';
import type { Connection } from './ssh.ts';
import type { Script } from './shell.ts';

export interface Check {
  name: string;
  appliesTo?: (host: Host) => boolean;
  probe: (host: Host) => Script;
  /** Returns the failure, or undefined when the condition holds. */
  verdict: (output: string, exitCode: number, host: Host) => string | undefined;
}

/** What a probe printed and how it exited. */
export interface ProbeReading { output: string; code: number }

/** The key of a probe's reading is its command: the same command is one reading. */
function probeFact(command: Script): Fact<ProbeReading> {
  // Probes ask services (HTTP, TLS, the database, the engine) for their answers.
  return { key: `probe:${command}`, command, parse: (output, code) => ({ output, code }), waits: true };
}

export const isProbeKey = (key: string) => key.startsWith('probe:');

export function applicableChecks(checks: Check[], host: Host): Check[] {
  return checks.filter(c => c.appliesTo?.(host) ?? true);
}

/** The facts that read these checks' probes on a host (one per distinct command). */
export function probeFacts(checks: Check[], host: Host): Array<Fact<ProbeReading>> {
  return applicableChecks(checks, host).map(c => probeFact(c.probe(host)));
}

/**
 * Runs the checks that apply to the host and judges each. Probes found in `readings` (read
 * earlier in this run, when nothing has changed since) are not asked again; the others go to
 * the host as one command.
 */
export async function runChecks(conn: Connection, checks: Check[], host: Host = conn.host, readings = new Readings()): Promise<StepResult[]> {
  const applicable = applicableChecks(checks, host);
  const started = Date.now();
  const facts = applicable.map(c => probeFact(c.probe(host)));
  await gatherFacts(conn, facts.filter(f => !readings.has(f.key)), readings);
  const seconds = (Date.now() - started) / 1000 / Math.max(applicable.length, 1);
  return applicable.map((c, i) => {
    const reading = readings.get(facts[i]!)!;
    const failure = c.verdict(reading.output, reading.code, host);
    return { step: `check ${c.name}`, status: failure ? 'failed' : 'ok', detail: failure ?? '', changes: [], diffs: [], seconds };
  });
}
