// Where a no-op install's droplet CPU goes (issue 21): the pieces of the run's one remote command,
// each sent on its own over one connection and measured with the droplet's cgroup accounting
// (droplet-cpu.ts): the connection (sshd, PAM, the session), the run lock, each step's facts
// and the checks' probes. Sent one by one, each piece also pays a shell's start, which the run's
// single command pays once: the pieces add up to a little more than the whole.
import path from 'node:path';
import { Connection } from '../../scripts/lib/ssh.ts';
import { acquireRunLock } from '../../scripts/lib/lock.ts';
import { loadInventory, selectHosts } from '../../scripts/lib/inventory.ts';
import { installScriptSteps } from '../../scripts/lib/runbooks.ts';
import { factsScript, pendingHandlers } from '../../scripts/lib/step.ts';
import type { Fact } from '../../scripts/lib/step.ts';
import { specFacts } from '../../scripts/lib/plan.ts';
import { probeFacts } from '../../scripts/lib/check.ts';
import type { Args } from '../../scripts/lib/cli.ts';
import { installChecks } from '../../checks/index.ts';
import { cpuOf } from './droplet-cpu.ts';
import type { CpuReading } from './droplet-cpu.ts';
import { median } from './stats.ts';

export interface Piece {
  what: string;
  /** Median over the rounds, idle subtracted: droplet cgroup, nested containers. */
  droplet: number;
  nested: number;
}

const settle = () => new Promise(resolve => setTimeout(resolve, 300));

export async function attributeDropletCpu(inventoryPath: string, hostName: string, read: () => CpuReading, idle: CpuReading, rounds: number): Promise<Piece[]> {
  const [host] = selectHosts(loadInventory(inventoryPath), hostName);
  if (!host) throw new Error(`${hostName} is not in ${inventoryPath}`);
  const run = { args: { _: [] } as Args, local: (...parts: string[]) => path.join(path.dirname(inventoryPath), ...parts) };
  const groups: Array<{ what: string; facts: Array<Fact<unknown>> }> = [
    { what: 'pending handlers', facts: [pendingHandlers] },
    ...installScriptSteps(host, run).map(step => ({ what: `facts: ${step.name}`, facts: [...(step.facts?.(host) ?? []), ...step.phases.flatMap(p => specFacts(p.facts(host)))] })),
    { what: 'checks (probes)', facts: probeFacts(installChecks, host) },
  ];
  const samples = new Map<string, CpuReading[]>();
  const sample = async (what: string, work: () => Promise<unknown>) => {
    const { cpu } = await cpuOf(read, idle, async () => {
      await work();
      await settle();
    });
    samples.set(what, [...(samples.get(what) ?? []), cpu]);
  };
  for (let round = 0; round < rounds; round++) {
    let conn: Connection | undefined;
    await sample('connection (sshd, PAM, session)', async () => {
      conn = await Connection.open(host, { acceptNew: false });
    });
    const open = conn!;
    await sample('run lock', async () => {
      const lock = await acquireRunLock(open, { waitSeconds: 10, script: 'bench', onWait: () => {} });
      lock.release();
    });
    for (const group of groups) await sample(group.what, () => open.run(factsScript(group.facts), group.what));
    open.close();
  }
  return [...samples].map(([what, cpus]) => ({ what, droplet: median(cpus.map(c => c.droplet)), nested: median(cpus.map(c => c.nested)) }));
}
