// The CPU a run costs a droplet, read from the kernel's own accounting of the droplet container's
// cgroup (issue 21). Two figures, because two methods disagreed:
//   - "droplet": the droplet container's cgroup alone — sshd and PAM, the shell and everything the
//     run starts (psql, docker, flock, cat…), and the daemons the run talks to: PostgreSQL,
//     dockerd, containerd and the containerd-shims, which all live in the droplet's cgroup;
//   - "nested": the cgroups of the containers inside the droplet (the Convex backend and
//     dashboard): Docker-in-Docker gives them cgroups beside the droplet's, not under it, so the
//     first figure does not see the backend answering a probe or a health check running in it.
// The droplet is never idle (health checks every 5 s, PostgreSQL's and dockerd's timers): each
// figure is the delta over the run minus the idle rate measured just before, over the same time.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';

export interface CpuReading {
  droplet: number;
  nested: number;
}

/** The file holding a container's total CPU time, under cgroup v1 or v2, and its unit. */
function cpuFileOf(id: string): { file: string; read: (text: string) => number } {
  const v1 = [`/sys/fs/cgroup/cpuacct/docker/${id}/cpuacct.usage`, `/sys/fs/cgroup/cpu,cpuacct/docker/${id}/cpuacct.usage`, `/sys/fs/cgroup/cpuacct/system.slice/docker-${id}.scope/cpuacct.usage`];
  const v2 = [`/sys/fs/cgroup/docker/${id}/cpu.stat`, `/sys/fs/cgroup/system.slice/docker-${id}.scope/cpu.stat`];
  const nanoseconds = v1.find(existsSync);
  if (nanoseconds) return { file: nanoseconds, read: text => Number(text.trim()) / 1e9 };
  const stat = v2.find(existsSync);
  if (stat) return { file: stat, read: text => Number(/^usage_usec (\d+)/m.exec(text)?.[1]) / 1e6 };
  throw new Error(`no cgroup CPU accounting found for container ${id.slice(0, 12)} (looked for ${[...v1, ...v2].join(', ')})`);
}

/** Reads a droplet's CPU seconds so far: its own cgroup, and its nested containers' together. */
export function dropletCpuReader(container: string): () => CpuReading {
  const id = execFileSync('docker', ['inspect', '--format', '{{.Id}}', container], { encoding: 'utf8' }).trim();
  // A no-op run recreates no container, so the nested ones are listed once.
  const nestedIds = execFileSync('docker', ['exec', container, 'docker', 'ps', '-q', '--no-trunc'], { encoding: 'utf8' }).split('\n').filter(Boolean);
  const own = cpuFileOf(id);
  const nested = nestedIds.map(cpuFileOf);
  const seconds = (f: { file: string; read: (text: string) => number }) => f.read(readFileSync(f.file, 'utf8'));
  return () => ({ droplet: seconds(own), nested: nested.reduce((sum, f) => sum + seconds(f), 0) });
}

const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms));

/** CPU seconds per wall second that the droplet spends with nothing run on it. */
export async function idleRate(read: () => CpuReading, seconds: number): Promise<CpuReading> {
  const before = read();
  const started = performance.now();
  await sleep(seconds * 1000);
  const after = read();
  const wall = (performance.now() - started) / 1000;
  return { droplet: (after.droplet - before.droplet) / wall, nested: (after.nested - before.nested) / wall };
}

/** What `work` cost the droplet, less what it would have spent idle over the same time. */
export async function cpuOf<T>(read: () => CpuReading, idle: CpuReading, work: () => Promise<T>): Promise<{ cpu: CpuReading; wall: number; result: T }> {
  const before = read();
  const started = performance.now();
  const result = await work();
  const wall = (performance.now() - started) / 1000;
  const after = read();
  const cpu = {
    droplet: Math.max(0, after.droplet - before.droplet - idle.droplet * wall),
    nested: Math.max(0, after.nested - before.nested - idle.nested * wall),
  };
  return { cpu, wall, result };
}
