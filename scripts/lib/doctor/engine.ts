// The Docker engine, and a run that may be changing things while doctor looks.
import type { Host } from '../inventory.ts';
import type { DoctorState } from './facts.ts';
import { Findings, run } from './rule.ts';
import { openWindowProblem, windowRecordPath } from '../steps/window-record.ts';
import type { Finding } from './rule.ts';

/** Without the Docker CLI nothing else is worth looking at: diagnose stops at docker-missing. */
export function engine(host: Host, state: DoctorState): Finding[] {
  const found = new Findings();
  if (!state.docker.cli) {
    found.add('docker-missing', 'problem', 'Docker is not installed on the droplet, so nothing of Convex runs', `${run(host, 'install')} (installs Docker, PostgreSQL and the backend)`);
    return found.list();
  }
  if (!state.docker.running) {
    found.add('docker-down', 'problem', 'the Docker engine is not running, so neither the backend nor the dashboard can run', `start it (systemctl start docker, or service docker start), or ${run(host, 'docker')}; then ${run(host, 'up')}`);
  }
  const window = openWindowProblem(state.window, host, { finishing: false });
  if (window) {
    found.add('promotion-window-open', 'problem', window.cause, window.fix);
  } else if (state.window) {
    found.add('promotion-window-killed', 'warning', `a promotion was cut off in its window on this droplet before its candidate started (${windowRecordPath(host)}); maintenance may still be on`, `${run(host, 'all')} starts the images the inventory pins on the data as it was, turns maintenance off and closes the window`);
  }
  if (state.lock) {
    found.add('run-in-progress', 'warning', `a run is in progress on this droplet (${state.lock}); what doctor sees may be a change half made`, 'wait for that run to finish, then run doctor again');
  }
  return found.list();
}
