// What logind costs a no-op run on a droplet that boots systemd (issue 21). There an SSH login
// also goes through pam_systemd: the session is registered with systemd-logind, and a user's
// first session starts that user's manager (user@0.service, `systemd --user`), which stops
// again UserStopDelaySec (10 s by default) after the user's last session ends. So a run that
// follows another within 10 s finds the manager running ("warm"), and a run after a pause (a
// person, cron) starts it ("cold"). Measured with the droplet's cgroup accounting
// (droplet-cpu.ts), all of which lives under the droplet's cgroup:
//   - a connection alone (open, `true`, close): warm, cold, and with pam_systemd switched off in
//     /etc/pam.d/common-session (put back afterwards), which is what logind adds;
//   - a whole no-op install, warm and cold.
import { execFileSync, spawnSync } from 'node:child_process';
import { Connection } from '../../scripts/lib/ssh.ts';
import { sh } from '../../scripts/lib/shell.ts';
import type { Host } from '../../scripts/lib/inventory.ts';
import { cpuOf } from './droplet-cpu.ts';
import type { CpuReading } from './droplet-cpu.ts';
import { median, round } from './stats.ts';

export interface Cost {
  wall: number;
  /** Droplet CPU-s, idle subtracted, median over the rounds (nested containers included). */
  cpu: number;
}

export interface LogindFigures {
  rounds: number;
  connection: { warm: Cost; cold: Cost; withoutPamSystemd: Cost };
  install: { warm: Cost; cold: Cost };
}

const USER_MANAGER = 'user@0.service';
const PAM_SESSION = '/etc/pam.d/common-session';
const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms));

/** Waits until root's user manager has stopped on its own (UserStopDelaySec after the last session). */
async function untilUserManagerStopped(container: string): Promise<void> {
  for (let waited = 0; waited < 60_000; waited += 500) {
    // is-active exits non-zero for every state but active.
    const state = spawnSync('docker', ['exec', container, 'systemctl', 'is-active', USER_MANAGER], { encoding: 'utf8' }).stdout.trim();
    if (state === 'inactive' || state === 'failed') return;
    await sleep(500);
  }
  throw new Error(`${USER_MANAGER} on ${container} was still running 60 s after the last session`);
}

/** The droplet's CPU (droplet + nested) and the wall time of `work`, median over the rounds; `before` readies each round. */
async function costOf(read: () => CpuReading, idle: CpuReading, rounds: number, before: () => Promise<unknown>, work: () => Promise<unknown>): Promise<Cost> {
  const samples: Array<{ wall: number; cpu: number }> = [];
  for (let r = 0; r < rounds; r++) {
    await before();
    const { cpu, wall } = await cpuOf(read, idle, async () => {
      await work();
      // What the session's end sets off (logind, pam_close_session) belongs to the run.
      await sleep(300);
    });
    samples.push({ wall: wall - 0.3, cpu: cpu.droplet + cpu.nested });
  }
  return { wall: round(median(samples.map(s => s.wall)), 3), cpu: round(median(samples.map(s => s.cpu)), 3) };
}

export async function measureLogind(opts: { container: string; host: Host; read: () => CpuReading; idle: CpuReading; rounds: number; runTool: () => Promise<void> }): Promise<LogindFigures> {
  const { container, read, idle, rounds } = opts;
  const connect = async () => {
    const conn = await Connection.open(opts.host, { acceptNew: false });
    await conn.run(sh`true`, 'true');
    conn.close();
  };
  const warm = async () => {
    // A session just closed: the manager is up for another 10 s.
    await connect();
    await sleep(500);
  };
  const cold = () => untilUserManagerStopped(container);
  const pamSystemd = (on: boolean) =>
    execFileSync('docker', ['exec', container, 'sed', '-i', on ? 's/^#\\(session\\s.*pam_systemd\\.so.*\\)$/\\1/' : 's/^\\(session\\s.*pam_systemd\\.so.*\\)$/#\\1/', PAM_SESSION]);
  process.stderr.write(`[bench] logind: connections and no-op installs, warm and cold, ${rounds} rounds each\n`);
  const connection = { warm: await costOf(read, idle, rounds, warm, connect), cold: await costOf(read, idle, rounds, cold, connect) };
  const install = { warm: await costOf(read, idle, rounds, warm, opts.runTool), cold: await costOf(read, idle, rounds, cold, opts.runTool) };
  await cold();
  pamSystemd(false);
  try {
    const withoutPamSystemd = await costOf(read, idle, rounds, () => sleep(500), connect);
    return { rounds, connection: { ...connection, withoutPamSystemd }, install };
  } finally {
    pamSystemd(true);
  }
}

/** The logind figures as README-ready Markdown lines. */
export function logindMarkdown(l: LogindFigures): string[] {
  const row = (cells: Array<string | number>) => `| ${cells.join(' | ')} |`;
  return [
    `## What logind costs under systemd (issue 21)`,
    '',
    `An SSH login goes through pam_systemd: logind registers the session, and root's first session starts root's user manager (\`${USER_MANAGER}\`), which stops 10 s after the last session ends. "Warm": a session closed just before (the manager still up); "cold": the manager stopped (a run more than 10 s after the last). Droplet CPU (droplet + nested), idle subtracted, and wall time, median of ${l.rounds}:`,
    '',
    row(['what', 'wall (s)', 'droplet CPU (s)']),
    row(['---', '---:', '---:']),
    row(['connection (open, `true`, close), warm', l.connection.warm.wall, l.connection.warm.cpu]),
    row(['connection, cold', l.connection.cold.wall, l.connection.cold.cpu]),
    row(['connection, pam_systemd switched off', l.connection.withoutPamSystemd.wall, l.connection.withoutPamSystemd.cpu]),
    row(['no-op install.ts, warm', l.install.warm.wall, l.install.warm.cpu]),
    row(['no-op install.ts, cold', l.install.cold.wall, l.install.cold.cpu]),
    '',
  ];
}
