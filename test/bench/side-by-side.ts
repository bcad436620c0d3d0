// The figures of issue 21 beside bench.ts's series: install.ts against Ansible on twin droplets,
// no-op run against no-op run, alternating; the droplet CPU each run costs; and where the tool's
// droplet CPU goes (attribution.ts).
import type { Fleet } from '../fleet/index.ts';
import type { DropletFlavour } from '../fleet/images.ts';
import { prepareTwin } from './ansible.ts';
import { attributeDropletCpu } from './attribution.ts';
import type { Piece } from './attribution.ts';
import { cpuOf, dropletCpuReader, idleRate } from './droplet-cpu.ts';
import type { CpuReading } from './droplet-cpu.ts';
import { median, round } from './stats.ts';

export interface Series {
  /** Wall seconds of each measured run. */
  walls: number[];
  wall: number;
  /** Median CPU seconds the run cost the droplet (idle subtracted): its own cgroup, and its nested containers'. */
  droplet: number;
  nested: number;
}

export interface SideBySide {
  ansibleVersion: string;
  rounds: number;
  idle: { tool: CpuReading; ansible: CpuReading };
  tool: Series;
  ansible: Series;
  /** Ansible's median wall time over the tool's. */
  ratio: number;
  pieces: Piece[];
}

const IDLE_SECONDS = 15;

function series(samples: Array<{ cpu: CpuReading; wall: number }>): Series {
  return {
    walls: samples.map(s => round(s.wall, 2)),
    wall: round(median(samples.map(s => s.wall)), 2),
    droplet: round(median(samples.map(s => s.cpu.droplet)), 3),
    nested: round(median(samples.map(s => s.cpu.nested)), 3),
  };
}

/**
 * `runTool` runs a no-op install.ts on `toolHost` and throws unless it changed nothing. Both
 * droplets must be running; the twin is converged here with the playbook first.
 */
export async function sideBySide(opts: { fleet: Fleet; flavour: DropletFlavour; toolHost: string; twin: string; rounds: number; runTool: () => Promise<void> }): Promise<SideBySide> {
  const { fleet, rounds } = opts;
  const twin = await prepareTwin(fleet, opts.twin, opts.flavour);
  const toolCpu = dropletCpuReader(fleet.droplets[opts.toolHost]!.container);
  const twinCpu = dropletCpuReader(fleet.droplets[opts.twin]!.container);
  const ansibleNoop = async () => {
    const play = await twin.play();
    if (play.changed || play.failed) throw new Error(`the Ansible no-op run changed ${play.changed} and failed ${play.failed} task(s):\n${play.output.slice(-2000)}`);
  };
  process.stderr.write(`[bench] side by side: idle rates over ${IDLE_SECONDS} s\n`);
  const [idleTool, idleTwin] = await Promise.all([idleRate(toolCpu, IDLE_SECONDS), idleRate(twinCpu, IDLE_SECONDS)]);
  const tool: Array<{ cpu: CpuReading; wall: number }> = [];
  const ansible: Array<{ cpu: CpuReading; wall: number }> = [];
  for (let r = 0; r <= rounds; r++) {
    process.stderr.write(`[bench] side by side, ${r === 0 ? 'warm-up' : `round ${r}/${rounds}`}:`);
    const t = await cpuOf(toolCpu, idleTool, opts.runTool);
    const a = await cpuOf(twinCpu, idleTwin, ansibleNoop);
    process.stderr.write(` install.ts ${t.wall.toFixed(2)}s (droplet ${t.cpu.droplet.toFixed(2)}+${t.cpu.nested.toFixed(2)} CPU-s), ansible ${a.wall.toFixed(2)}s (${a.cpu.droplet.toFixed(2)}+${a.cpu.nested.toFixed(2)})\n`);
    if (r === 0) continue;
    tool.push(t);
    ansible.push(a);
  }
  process.stderr.write(`[bench] attributing the droplet CPU of a no-op install, ${rounds} rounds\n`);
  const pieces = (await attributeDropletCpu(fleet.inventoryPath, opts.toolHost, toolCpu, idleTool, rounds)).map(p => ({ ...p, droplet: round(p.droplet, 3), nested: round(p.nested, 3) }));
  const roundIdle = (c: CpuReading) => ({ droplet: round(c.droplet, 3), nested: round(c.nested, 3) });
  const toolSeries = series(tool);
  const ansibleSeries = series(ansible);
  return { ansibleVersion: twin.version, rounds, idle: { tool: roundIdle(idleTool), ansible: roundIdle(idleTwin) }, tool: toolSeries, ansible: ansibleSeries, ratio: round(ansibleSeries.wall / toolSeries.wall, 1), pieces };
}

/** The side-by-side figures as README-ready Markdown lines. */
export function sideBySideMarkdown(s: SideBySide): string[] {
  const row = (cells: Array<string | number>) => `| ${cells.join(' | ')} |`;
  return [
    `## Side by side with Ansible, and the droplet's CPU (issue 21)`,
    '',
    `${s.ansibleVersion}, pipelining on, test/bench/ansible/install.yml on a twin droplet converged first; no-op runs alternating, median of ${s.rounds} after a warm-up. Droplet CPU: the droplet container's cgroup ("droplet": sshd, the shell and what it runs, PostgreSQL, dockerd, containerd) and its nested containers' cgroups ("nested": the backend and dashboard), each less the idle rate measured just before (tool's droplet ${s.idle.tool.droplet} + ${s.idle.tool.nested}, twin ${s.idle.ansible.droplet} + ${s.idle.ansible.nested} CPU-s per s).`,
    '',
    row(['no-op run, 1 host', 'median wall (s)', 'runs (s)', 'droplet CPU (s)', 'nested CPU (s)', 'droplet + nested (s)']),
    row(['---', '---:', '---', '---:', '---:', '---:']),
    row(['install.ts', s.tool.wall, s.tool.walls.join(', '), s.tool.droplet, s.tool.nested, round(s.tool.droplet + s.tool.nested, 3)]),
    row(['ansible-playbook', s.ansible.wall, s.ansible.walls.join(', '), s.ansible.droplet, s.ansible.nested, round(s.ansible.droplet + s.ansible.nested, 3)]),
    '',
    `Ansible takes **${s.ratio}×** the tool's wall time.`,
    '',
    `Where install.ts's droplet CPU goes, each piece of its one remote command sent alone (so each also pays a shell's start), median of ${s.rounds}:`,
    '',
    row(['piece', 'droplet CPU (s)', 'nested CPU (s)']),
    row(['---', '---:', '---:']),
    ...s.pieces.map(p => row([p.what, p.droplet, p.nested])),
    '',
  ];
}
