// npm run bench [-- --runs N] [--flavour debian12|debian13-systemd] [--keep]
//
// How long a no-op re-run takes on converged hosts, against the floor set by the tool's own
// start-up (issue 8). A script that prints figures, not a timed test:
//
//   1. a fleet of 10 droplets without domains ("bench-<flavour>"; reused when it is already up),
//      Debian 12 with sshd as PID 1 or Debian 13 booting systemd (--flavour);
//   2. converged by a real first run of install.ts on all of them (--parallel 10), then checked
//      to be a no-op;
//   3. measured, each as the median of N runs (default 5) after one warm-up run, for 1, 5 and 10
//      hosts, with only the droplets measured running (the others paused: on 2 CPUs, ten idle
//      droplets alone take a good part of the CPUs):
//      - the floor: `npx zx test/bench/noop.ts`, a script that does nothing, measured beside each
//        install in the same conditions, so that "over the floor" is what the tool adds;
//      - start-up: `npx zx scripts/install.ts --help` (our modules loaded, nothing connected);
//      - the no-op install: `npx zx scripts/install.ts --host … --json`, with the SSH
//        connections and remote commands per host from its JSON;
//   4. side by side with Ansible (issue 21, side-by-side.ts): test/bench/ansible/install.yml on a
//      twin droplet against install.ts on b01, no-op runs alternating, with the CPU each run costs
//      the droplet read from its cgroup, and that CPU attributed to the pieces of the run;
//   5. written to test/bench/results-<flavour>.json and .md, and printed.
//
// Every measured install must be a real no-op (nothing changed, nothing failed), else the bench
// says so and exits 1. Memory: each run goes through /usr/bin/time, whose maximum resident set
// is that of the largest single process of the run (npx's node or the node that runs zx and our
// script); one more run of 10 hosts polls /proc for each process's own peak, to say which it is.
// How busy the machine's CPUs were just before each measured run is recorded beside it: these
// droplets share the machine's CPUs with the tool being measured, so a busy machine makes every
// figure slower.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { fleetDown, fleetUp } from '../fleet/index.ts';
import type { Fleet } from '../fleet/index.ts';
import type { DropletFlavour } from '../fleet/images.ts';
import { repoRoot } from '../fleet/paths.ts';
import { sideBySide, sideBySideMarkdown } from './side-by-side.ts';
import { logindMarkdown, measureLogind } from './logind.ts';
import { dropletCpuReader, idleRate } from './droplet-cpu.ts';
import { loadInventory, selectHosts } from '../../scripts/lib/inventory.ts';
import { busyPercent, median, round } from './stats.ts';

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '5' },
    flavour: { type: 'string', default: 'debian12' },
    keep: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h' },
  },
});
if (values.help) {
  console.log(
    'usage: npm run bench [-- --runs N] [--flavour F] [--keep]\n\n  --runs N     measured runs per figure (default 5, at least 5 for the results file)\n  --flavour F  the droplets: debian12 (sshd as PID 1, the default) or debian13-systemd\n  --keep       leave the fleet "bench-<flavour>" up afterwards (the next bench reuses it)',
  );
  process.exit(0);
}
const FLAVOURS: DropletFlavour[] = ['debian12', 'debian13-systemd'];
const flavour = FLAVOURS.find(f => f === values.flavour);
if (!flavour) {
  console.error(`--flavour: "${values.flavour}" is not one of ${FLAVOURS.join(', ')}`);
  process.exit(2);
}
const RUNS = Math.max(1, Number(values.runs));
const FLEET = `bench-${flavour}`;
const SIZES = [1, 5, 10];
const MEASURED = Array.from({ length: 10 }, (_, i) => ({ name: `b${String(i + 1).padStart(2, '0')}`, flavour }));
/** Ansible's twin of b01 for the side-by-side figure (side-by-side.ts); paused until then. */
const TWIN = 'twin';
const DROPLETS = [...MEASURED, { name: TWIN, flavour }];
const OUT_DIR = path.join(repoRoot, 'test', 'bench');
const TIME = '/usr/bin/time';

// Issue 21's targets on this machine.
const TARGETS = { oneHostOverFloor: 0.25, tenHostsOverFloor: 3.0, commandsPerHost: 1, connectionsPerHost: 1, peakMemoryMB: 150, ansibleRatio: 10, dropletCpuSeconds: 0.3 };

interface Measured {
  wall: number;
  /** Largest single process of the run (ru_maxrss of the waited-for tree), MB. */
  maxRssMB: number;
  /** CPU seconds (user + system) of the whole local process tree: far less sensitive to load than wall time. */
  cpu: number;
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `npx ARGS` in the repo as a user would, through /usr/bin/time for its peak memory. */
async function measure(args: string[]): Promise<Measured> {
  const timeFile = path.join(os.tmpdir(), `convex-ops-bench-${process.pid}.time`);
  const started = process.hrtime.bigint();
  const result = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve, reject) => {
    const child = spawn(TIME, ['-f', '%M %U %S', '-o', timeFile, 'npx', ...args], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1' } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('error', reject);
    child.on('close', code => resolve({ code: code ?? 1, stdout, stderr }));
  });
  const wall = Number(process.hrtime.bigint() - started) / 1e9;
  const [kb, user, system] = (await fs.readFile(timeFile, 'utf8')).trim().split('\n').pop()!.split(' ').map(Number);
  await fs.rm(timeFile, { force: true });
  return { wall, maxRssMB: kb! / 1024, cpu: user! + system!, ...result };
}


interface HostJson { host: string; connections: number; commands: number; seconds: number; recap: { ok: number; changed: number; failed: number; skipped: number }; steps: Array<{ step: string; status: string; detail: string; seconds: number }> }

function parseRun(m: Measured, what: string): HostJson[] {
  let doc: { hosts: HostJson[] };
  try {
    doc = JSON.parse(m.stdout) as { hosts: HostJson[] };
  } catch {
    throw new Error(`${what}: no JSON on stdout (exit ${m.code})\n${m.stderr.slice(-3000)}`);
  }
  return doc.hosts;
}

interface Figure {
  what: string;
  args: string[];
  /** Droplets running while it is measured (the first N; the others are paused). */
  running: number;
  /** Hosts of a no-op install; undefined for the floor and the start-up. */
  hosts?: number;
  results: Measured[];
  /** How busy the machine's CPUs were (%) over the half second before each measured run. */
  busy: number[];
  /** Each measured install's hosts from its JSON. */
  perRun: HostJson[][];
}

interface Summary {
  what: string;
  command: string;
  runs: number[];
  median: number;
  /** Median CPU seconds of the local process tree. */
  cpu: number;
  maxRssMB: { median: number; max: number };
  busy: { median: number; min: number; max: number };
}

function summarize(f: Figure): Summary {
  const walls = f.results.map(r => r.wall);
  const rss = f.results.map(r => r.maxRssMB);
  return {
    what: f.what,
    command: `npx ${f.args.join(' ')}`,
    runs: walls.map(w => round(w)),
    median: round(median(walls)),
    cpu: round(median(f.results.map(r => r.cpu))),
    maxRssMB: { median: round(median(rss), 1), max: round(Math.max(...rss), 1) },
    busy: { median: round(median(f.busy)), min: Math.min(...f.busy), max: Math.max(...f.busy) },
  };
}

/** One more run, polling /proc for every process of the tree and its own peak (VmHWM). */
async function memoryBreakdown(args: string[]): Promise<Array<{ pid: number; command: string; peakMB: number }>> {
  const child = spawn('npx', args, { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout.resume();
  child.stderr.resume();
  const peaks = new Map<number, { command: string; peakKB: number }>();
  const children = (pid: number): number[] => {
    const out: number[] = [];
    try {
      for (const tid of readdirSync(`/proc/${pid}/task`)) {
        const list = readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim();
        if (list) out.push(...list.split(' ').map(Number));
      }
    } catch {
      // gone
    }
    return out;
  };
  const poll = () => {
    const queue = [child.pid!];
    while (queue.length) {
      const pid = queue.shift()!;
      try {
        const status = readFileSync(`/proc/${pid}/status`, 'utf8');
        const hwm = Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0);
        const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ');
        const seen = peaks.get(pid);
        if (!seen || hwm > seen.peakKB) peaks.set(pid, { command: cmdline.slice(0, 120), peakKB: hwm });
      } catch {
        // gone
      }
      queue.push(...children(pid));
    }
  };
  const timer = setInterval(poll, 20);
  await new Promise(resolve => child.on('close', resolve));
  clearInterval(timer);
  return [...peaks].map(([pid, p]) => ({ pid, command: p.command, peakMB: round(p.peakKB / 1024, 1) })).filter(p => p.peakMB > 0);
}

// ---------------------------------------------------------------------------------------------

if (!existsSync(TIME)) {
  console.error(`${TIME} is missing (apt-get install time): the bench reads peak memory from it`);
  process.exit(1);
}

const benchStarted = Date.now();
process.stderr.write(`[bench] CPUs busy ${await busyPercent()} % of ${os.cpus().length}\n`);
/** Ten droplets starting at once on a loaded machine may time out; a second attempt recreates them. */
async function upWithRetry(): Promise<Fleet> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fleetUp({ name: FLEET, droplets: DROPLETS, reuse: true, pebble: false });
    } catch (error) {
      if (attempt === 3) throw error;
      process.stderr.write(`[bench] fleet up failed (${(error as Error).message.split('\n')[0]}); trying again\n`);
    }
  }
}
const fleet = await upWithRetry();
const inventory = fleet.inventoryPath;
const names = MEASURED.map(d => d.name);
const twinContainer = fleet.droplets[TWIN]!.container;
const twinPaused = () => execFileSync('docker', ['inspect', '--format', '{{.State.Paused}}', twinContainer], { encoding: 'utf8' }).trim() === 'true';
if (!twinPaused()) execFileSync('docker', ['pause', twinContainer]);

const paused = new Set<string>();
/** Pauses every droplet but the first N (docker pause freezes them; unpause resumes them as they were). */
const runOnly = (running: number): boolean => {
  const before = paused.size;
  for (const [i, name] of names.entries()) {
    const container = fleet.droplets[name]!.container;
    const wanted = i < running;
    if (wanted && paused.has(container)) execFileSync('docker', ['unpause', container]);
    if (!wanted && !paused.has(container)) execFileSync('docker', ['pause', container]);
    if (wanted) paused.delete(container);
    else paused.add(container);
  }
  return paused.size !== before;
};

/** Issue 21's logind figures on a droplet that boots systemd: its own idle rate first, the others paused. */
async function logindOf(name: string, runTool: () => Promise<void>) {
  const [host] = selectHosts(loadInventory(inventory), name);
  const container = fleet.droplets[name]!.container;
  const read = dropletCpuReader(container);
  execFileSync('docker', ['pause', twinContainer]);
  const idle = await idleRate(read, 15);
  return measureLogind({ container, host: host!, read, idle, rounds: RUNS, runTool });
}

try {
  // Converge: a real install on every droplet, until one run changes nothing.
  let hosts = names;
  for (let attempt = 1; ; attempt++) {
    process.stderr.write(`[bench] converging ${hosts.length} droplet(s) with install.ts (attempt ${attempt})\n`);
    const started = Date.now();
    const m = await measure(['zx', 'scripts/install.ts', '--inventory', inventory, '--host', hosts.join(','), '--parallel', '10', '--json']);
    const runs = parseRun(m, 'converge');
    const notDone = runs.filter(r => r.recap.failed > 0 || r.recap.changed > 0);
    process.stderr.write(`[bench]   ${((Date.now() - started) / 1000).toFixed(0)}s: ${runs.length - notDone.length} no-op, ${notDone.length} changed or failed\n`);
    for (const r of runs.filter(r => r.recap.failed > 0)) {
      const failed = r.steps.find(s => s.status === 'failed');
      process.stderr.write(`[bench]   ${r.host} failed at ${failed?.step}: ${failed?.detail.split('\n')[0]}\n`);
    }
    if (notDone.length === 0) break;
    if (attempt === 4) throw new Error(`the fleet did not converge: ${notDone.map(r => r.host).join(', ')}`);
    hosts = notDone.map(r => r.host);
  }

  const noopProblems: string[] = [];
  const install = (hosts: number) => ['zx', 'scripts/install.ts', '--inventory', inventory, '--host', names.slice(0, hosts).join(','), '--json'];
  /** A no-op install on the first N hosts, outside the series: throws unless it changed nothing. */
  const runNoop = async (hosts: number) => {
    const m = await measure(install(hosts));
    for (const host of parseRun(m, 'no-op install')) {
      if (host.recap.changed || host.recap.failed) throw new Error(`install.ts on ${host.host} was not a no-op:\n${m.stdout.slice(-1500)}`);
    }
  };
  const floorOf = (running: number): Figure => ({ what: `floor: \`npx zx test/bench/noop.ts\`, ${running} droplet${running > 1 ? 's' : ''} running`, args: ['zx', 'test/bench/noop.ts'], running, results: [], busy: [], perRun: [] });
  const figures: Figure[] = SIZES.flatMap(hosts => [
    floorOf(hosts),
    ...(hosts === 1 ? [{ what: 'start-up: `install.ts --help`', args: ['zx', 'scripts/install.ts', '--help'], running: 1, results: [], busy: [], perRun: [] }] : []),
    { what: `no-op install, ${hosts} host${hosts > 1 ? 's' : ''}`, args: install(hosts), running: hosts, hosts, results: [], busy: [], perRun: [] },
  ]);
  // One series per size, with only its droplets running: round by round (the first a warm-up),
  // the floor and the install alternate, so that a change in the machine's load touches both
  // alike. Series rather than sizes interleaved: ten droplets just worked on leave the machine
  // busy for a while, which would slow the next 1-host figure.
  for (const size of SIZES) {
    const series = figures.filter(f => f.running === size);
    // A droplet just resumed first runs what fell due while it was paused (health checks).
    if (runOnly(size)) await new Promise(resolve => setTimeout(resolve, 10_000));
    for (let round = 0; round <= RUNS; round++) {
      process.stderr.write(`[bench] ${size} running, ${round === 0 ? 'warm-up' : `round ${round}/${RUNS}`}:`);
      for (const figure of series) {
        const busyNow = await busyPercent();
        const m = await measure(figure.args);
        process.stderr.write(` ${m.wall.toFixed(2)}s`);
        if (figure.hosts !== undefined) {
          const hosts = parseRun(m, figure.what);
          for (const h of hosts) {
            if (h.recap.changed || h.recap.failed) {
              const bad = h.steps.filter(st => st.status === 'changed' || st.status === 'failed').map(st => `${st.step} ${st.status}: ${st.detail.split('\n')[0]}`);
              noopProblems.push(`${figure.what}, round ${round}: ${h.host}: ${bad.join('; ')}`);
            }
          }
          if (hosts.length !== figure.hosts) noopProblems.push(`${figure.what}, round ${round}: the JSON names ${hosts.length} hosts`);
          if (round > 0) figure.perRun.push(hosts);
        } else if (m.code !== 0) {
          throw new Error(`${figure.what} exited ${m.code}:\n${m.stderr.slice(-2000)}`);
        }
        if (round > 0) {
          figure.results.push(m);
          figure.busy.push(busyNow);
        }
      }
      process.stderr.write('\n');
    }
  }
  const floors = new Map(figures.filter(f => f.what.startsWith('floor')).map(f => [f.running, summarize(f)]));
  const floor = floors.get(1)!;
  const startup = summarize(figures.find(f => f.what.startsWith('start-up'))!);
  const installs = figures.filter(f => f.hosts !== undefined).map(f => {
    const all = f.perRun.flat();
    return {
      ...summarize(f),
      floor: floors.get(f.hosts!)!.median,
      command: `npx zx scripts/install.ts --inventory <fleet inventory> --host <${f.hosts} hosts> --json`,
      hosts: f.hosts!,
      connectionsPerHost: [...new Set(all.map(h => h.connections))].sort(),
      commandsPerHost: [...new Set(all.map(h => h.commands))].sort(),
      // The slowest host's own time (connect to close), median over the runs.
      hostSeconds: round(median(f.perRun.map(run => Math.max(...run.map(h => h.seconds))))),
    };
  });
  process.stderr.write('[bench] memory breakdown: one more run on 10 hosts, polling /proc\n');
  const breakdown = await memoryBreakdown(['zx', 'scripts/install.ts', '--inventory', inventory, '--host', names.join(','), '--json']);

  // Issue 21: against Ansible on a twin droplet, with only the two of them running.
  runOnly(1);
  execFileSync('docker', ['unpause', twinContainer]);
  await new Promise(resolve => setTimeout(resolve, 10_000));
  const side = await sideBySide({
    fleet,
    flavour,
    toolHost: names[0]!,
    twin: TWIN,
    rounds: RUNS,
    runTool: () => runNoop(1),
  });
  const dropletCpu = round(side.tool.droplet + side.tool.nested, 3);
  const logind = flavour === 'debian13-systemd' ? await logindOf(names[0]!, () => runNoop(1)) : undefined;

  // Context for the figures: other engineers' fleets share this machine's CPUs.
  const otherContainers = execFileSync('docker', ['ps', '--filter', 'status=running', '--format', '{{.Label "convex-ops.fleet"}}'], { encoding: 'utf8' })
    .split('\n')
    .filter(label => label !== FLEET)
    .join('\n');
  const one = installs.find(i => i.hosts === 1)!;
  const ten = installs.find(i => i.hosts === 10)!;
  const targets = [
    { target: 'no-op install, 1 host', limit: `≤ floor + ${TARGETS.oneHostOverFloor} s`, measured: `floor + ${round(one.median - one.floor)} s`, met: one.median - one.floor <= TARGETS.oneHostOverFloor },
    { target: 'no-op install, 10 hosts', limit: `≤ floor + ${TARGETS.tenHostsOverFloor} s`, measured: `floor + ${round(ten.median - ten.floor)} s`, met: ten.median - ten.floor <= TARGETS.tenHostsOverFloor },
    { target: 'remote commands per host', limit: `≤ ${TARGETS.commandsPerHost}`, measured: installs.flatMap(i => i.commandsPerHost).filter((v, i, a) => a.indexOf(v) === i).join(', '), met: installs.every(i => i.commandsPerHost.every(c => c <= TARGETS.commandsPerHost)) },
    { target: 'SSH connections per host', limit: `= ${TARGETS.connectionsPerHost}`, measured: installs.flatMap(i => i.connectionsPerHost).filter((v, i, a) => a.indexOf(v) === i).join(', '), met: installs.every(i => i.connectionsPerHost.every(c => c === TARGETS.connectionsPerHost)) },
    { target: 'peak memory, 10 hosts', limit: `≤ ${TARGETS.peakMemoryMB} MB`, measured: `${ten.maxRssMB.max} MB`, met: ten.maxRssMB.max <= TARGETS.peakMemoryMB },
    { target: 'Ansible\'s no-op over the tool\'s', limit: `≥ ${TARGETS.ansibleRatio}× (12× stretch)`, measured: `${side.ratio}×`, met: side.ratio >= TARGETS.ansibleRatio },
    { target: 'droplet CPU per no-op run', limit: `≤ ${TARGETS.dropletCpuSeconds} CPU-s`, measured: `${dropletCpu} CPU-s (droplet ${side.tool.droplet} + nested ${side.tool.nested})`, met: dropletCpu <= TARGETS.dropletCpuSeconds },
  ];

  const git = (...args: string[]) => execFileSync('git', args, { cwd: repoRoot, encoding: 'utf8' });
  const doc = {
    date: new Date().toISOString(),
    /** The commit measured, and the files that differed from it in the work tree at the time. */
    commit: git('rev-parse', '--short', 'HEAD').trim(),
    uncommitted: git('status', '--porcelain', '--untracked-files=no').split('\n').filter(Boolean).map(l => l.slice(3)).filter(f => !f.startsWith('test/bench/results-')),
    flavour,
    machine: { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model, memoryGB: round(os.totalmem() / 2 ** 30, 1), node: process.version },
    note: `Wall times in seconds, medians of the measured runs after one warm-up round; one series per size, with only its droplets running (the others paused); within a series the floor and the install alternate round by round, and each install is compared with the floor of its series. busy: how busy the machine's CPUs were (%, /proc/stat) over the half second before each measured run (the droplets and other work on this machine share its CPUs with the tool, so a busy machine slows every figure; the load average cannot say it, since the paused droplets' frozen tasks count in it). Memory: the largest single process of a run (/usr/bin/time %M). cpu: user + system seconds of the local process tree (npx, zx, the script), also from /usr/bin/time.`,
    otherContainers: otherContainers.trim().split('\n').filter(Boolean).length,
    runsPerFigure: RUNS,
    floors: [...floors].map(([running, summary]) => ({ running, ...summary })),
    startup,
    installs,
    memoryBreakdown10Hosts: breakdown,
    sideBySide: side,
    logind,
    noopProblems,
    targets,
    benchSeconds: Math.round((Date.now() - benchStarted) / 1000),
  };
  await fs.writeFile(path.join(OUT_DIR, `results-${flavour}.json`), `${JSON.stringify(doc, null, 2)}\n`);

  const row = (cells: Array<string | number>) => `| ${cells.join(' | ')} |`;
  const processLabel = (command: string) =>
    /^(\/bin\/)?sh /.test(command) ? 'sh' : /npm|npx/.test(command) && !/\/zx\b.*install\.ts/.test(command) ? `npx (${command.split(' ').slice(0, 3).join(' ')})` : /install\.ts/.test(command) ? 'the node running zx and install.ts' : command.split(' ')[0]!;
  const busyText = (x: Summary) => `${x.busy.median} (${x.busy.min}–${x.busy.max})`;
  const md = [
    `# npm run bench -- --flavour ${flavour}: results`,
    '',
    `${doc.date}, commit ${doc.commit}${doc.uncommitted.length ? ` (work tree also changed in ${doc.uncommitted.join(', ')})` : ''}, ${flavour} droplets, ${doc.machine.cpus} CPUs (${doc.machine.cpuModel}), Node ${doc.machine.node}; median of ${RUNS} runs after a warm-up round; one series per size with only its droplets running (the others paused), the floor and the install alternating round by round; "over floor" is against the floor of the same series. ${doc.otherContainers} other containers (other engineers' test fleets) were running on the machine's Docker engine.`,
    '',
    row(['figure', 'median wall (s)', 'over floor (s)', 'runs (s)', 'slowest host (s)', 'local CPU (s)', 'SSH connections / host', 'remote commands / host', 'peak RSS (MB)', 'CPUs busy before, % (median, min–max)']),
    row(['---', '---:', '---:', '---', '---:', '---:', '---:', '---:', '---:', '---']),
    ...installs.flatMap(i => {
      const f = floors.get(i.hosts)!;
      return [
        row([f.what, f.median, '', f.runs.join(', '), '', f.cpu, '', '', f.maxRssMB.max, busyText(f)]),
        ...(i.hosts === 1 ? [row([startup.what, startup.median, round(startup.median - floor.median), startup.runs.join(', '), '', startup.cpu, '', '', startup.maxRssMB.max, busyText(startup)])] : []),
        row([i.what, i.median, round(i.median - i.floor), i.runs.join(', '), i.hostSeconds, i.cpu, i.connectionsPerHost.join(', '), i.commandsPerHost.join(', '), i.maxRssMB.max, busyText(i)]),
      ];
    }),
    '',
    row(['target (issues 8 and 21)', 'limit', 'measured', 'met']),
    row(['---', '---', '---', '---']),
    ...targets.map(t => row([t.target, t.limit, t.measured, t.met ? 'yes' : '**no**'])),
    '',
    `Peak memory per process, one more run on 10 hosts (/proc VmHWM): ${breakdown.map(p => `${processLabel(p.command)} ${p.peakMB} MB`).join('; ')}.`,
    '',
    noopProblems.length ? `**Not a no-op:** ${noopProblems.join('; ')}` : 'Every measured install was a no-op: nothing changed, nothing failed.',
    '',
    ...sideBySideMarkdown(side),
    ...(logind ? logindMarkdown(logind) : []),
    `Reproduce: \`npm run bench -- --flavour ${flavour}\` (add \`--keep\` to leave the fleet up for the next run).`,
    '',
  ].join('\n');
  await fs.writeFile(path.join(OUT_DIR, `results-${flavour}.md`), md);
  process.stdout.write(`\n${md}`);
  if (noopProblems.length) process.exitCode = 1;
} finally {
  runOnly(names.length);
  if (twinPaused()) execFileSync('docker', ['unpause', twinContainer]);
  if (!values.keep) {
    process.stderr.write(`[bench] removing fleet ${FLEET} (--keep leaves it up)\n`);
    await fleetDown(FLEET);
  } else {
    process.stderr.write(`[bench] fleet ${FLEET} left up: ${inventory}; remove it with npm run fleet -- down --name ${FLEET}\n`);
  }
}
