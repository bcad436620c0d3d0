// The Convex containers: missing, unable to start, crash-looping, stopped, unhealthy, or running
// another image than the inventory pins.
import type { Host } from '../inventory.ts';
import { CONTAINERS } from '../steps/docker.ts';
import type { ContainerInfo, DoctorState } from './facts.ts';
import { currentLog, excerpt, LOG_CAUSE_TITLES } from './log.ts';
import { describeListener, portHolders } from './ports.ts';
import { Findings, run } from './rule.ts';
import type { Context, Finding } from './rule.ts';

/** A Convex container as the inventory names it: its role, its name, what the engine says of it. */
interface Slot { role: string; name: string; c: ContainerInfo }

/** Docker's start error when another program or container holds the port. */
function portConflict(host: Host, state: DoctorState, { name, c }: Slot): Finding | undefined {
  if (!/port is already allocated|address already in use/i.test(c.error)) return undefined;
  const port = Number(/:(\d+)(?:\D*)?(?:failed|: bind)/.exec(c.error)?.[1] ?? /:(\d{2,5})\b/.exec(c.error)?.[1]);
  const holders = Number.isFinite(port) ? portHolders(state, port) : [];
  const containers = (state.publications ?? []).filter(p => p.port === port && p.container !== name);
  const by = holders.length
    ? ` by ${holders.map(describeListener).join(', ')}`
    : containers.length ? ` by the container ${[...new Set(containers.map(p => p.container))].join(', ')}` : ' (by another container or program)';
  return {
    id: `port-${port || 'unknown'}`,
    severity: 'problem',
    cause: `${name} cannot start: port ${port || '?'} is already in use${by}; Docker says "${c.error.replace(/\([0-9a-f]{12,}\)/g, '(…)').slice(0, 240)}"`,
    fix: `stop or move that program (or the container holding the port), then ${run(host, 'up')}`,
  };
}

function restartLoop(host: Host, state: DoctorState, context: Context, { role, name, c }: Slot): Finding {
  const known = role === 'backend' ? context.causes.map(x => x.id) : [];
  const lastError = role === 'backend' ? [...currentLog(state.log, c)].reverse().find(l => /error|fatal|panic/i.test(l.text)) : undefined;
  return {
    id: `${role}-restart-loop`,
    severity: 'problem',
    cause: `${name} is in a restart loop (${c.restarts} restarts, now ${c.status}${c.status === 'running' ? '' : `, last exit code ${c.exitCode}`})` +
      (known.length ? `, caused by ${known.map(id => LOG_CAUSE_TITLES[id] ?? id).join(' and ')} (see the other findings)` : lastError ? `; its last error: ${excerpt(lastError.text)}` : ''),
    fix: known.length ? `fix those causes; the container then starts on its own (or ${run(host, 'up')})` : `read docker logs ${name} on the droplet; the causes doctor knows are listed in the README's troubleshooting`,
  };
}

export function containers(host: Host, state: DoctorState, context: Context): Finding[] {
  if (!state.docker.running) return [];
  const found = new Findings(context.found);
  for (const [role, name] of Object.entries(CONTAINERS)) {
    const c = state.containers.get(name);
    if (!c) {
      found.add(`${role}-missing`, 'problem', `container ${name} does not exist`, run(host, 'install'));
      continue;
    }
    const portError = portConflict(host, state, { role, name, c });
    if (portError) found.keep(portError);
    // Docker restarts a crashing container with a growing delay; between attempts it is
    // "restarting", during one it is "running" but not (yet) healthy.
    const looping = c.status === 'restarting' || (c.restarts >= 1 && !(c.status === 'running' && (c.health === 'healthy' || c.health === undefined)));
    if (looping) {
      found.keep(restartLoop(host, state, context, { role, name, c }));
    } else if ((c.status === 'exited' || c.status === 'dead') && !portError) {
      found.add(`${role}-stopped`, 'problem', `${name} is ${c.status} (exit code ${c.exitCode}, since ${c.finishedAt.slice(0, 19)}Z)`, `${run(host, 'up')} starts it`);
    } else if (c.status === 'created' && !portError) {
      found.add(`${role}-not-started`, 'problem', `${name} was created but never started${c.error ? `: ${c.error.slice(0, 200)}` : ''}`, run(host, 'up'));
    } else if (c.status === 'running' && c.health === 'unhealthy') {
      found.add(`${role}-unhealthy`, 'problem', `${name} runs but its health check fails${c.healthOutput ? `: ${excerpt(c.healthOutput)}` : ''}`, `${run(host, 'check')} and docker logs ${name} show more; a new image may be broken: compare with the inventory's pinned image (${c.image})`);
    }
    const pinned = role === 'backend' ? host.backend_image : host.dashboard_image;
    if (c.image !== pinned) found.add(`${role}-image`, 'warning', `${name} runs ${c.image}, the inventory pins ${pinned}`, `${run(host, 'up')} (or all.ts --promote) puts the pinned image in place`);
  }
  return found.list();
}
