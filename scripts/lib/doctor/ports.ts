// Ports Convex and nginx need, held by another program.
import type { Host } from '../inventory.ts';
import { CONTAINERS } from '../steps/docker.ts';
import type { DoctorState, Listener } from './facts.ts';
import { Findings, run } from './rule.ts';
import type { Context, Finding } from './rule.ts';

/** Docker's own processes: a port held by one of these is the container's publication. */
const DOCKER_PROCESSES = /^(docker-proxy|dockerd|containerd|rootlesskit)/;

/** Programs other than Docker listening on the port. */
export const portHolders = (state: DoctorState, port: number) => state.listeners.filter(l => l.port === port && l.process && !DOCKER_PROCESSES.test(l.process));

export const describeListener = (l: Listener) => `${l.process}${l.pid ? ` (pid ${l.pid})` : ''} on ${l.address}:${l.port}`;

export function ports(host: Host, state: DoctorState, context: Context): Finding[] {
  const found = new Findings(context.found);
  // A program on a Convex port while the container that should own it is down.
  const convexPorts: Array<[number, string]> = [[3210, CONTAINERS.backend], [3211, CONTAINERS.backend], [6791, CONTAINERS.dashboard]];
  for (const [port, owner] of convexPorts) {
    const holders = portHolders(state, port);
    if (holders.length && state.containers.get(owner)?.status !== 'running') {
      found.add(`port-${port}`, 'problem', `port ${port}, which ${owner} publishes, is taken by ${holders.map(describeListener).join(', ')}`, `stop or move that program, then ${run(host, 'up')}`);
    }
  }
  if (host.domains) {
    for (const port of [80, 443]) {
      const holders = state.listeners.filter(l => l.port === port && l.process && l.process !== 'nginx');
      if (holders.length) found.add(`port-${port}`, 'problem', `port ${port} is taken by ${holders.map(describeListener).join(', ')}, so nginx cannot serve ${host.domains.api}`, `stop or remove that web server, then ${run(host, 'nginx')}`);
    }
  }
  if (context.logged.has('port-in-use') && !found.ids().some(k => k.startsWith('port-'))) {
    found.add('port-in-use', 'problem', `the backend cannot listen${context.says('port-in-use')}`, `find the program on that port (ss -ltnp), stop it, then ${run(host, 'up')}`);
  }
  return found.list();
}
