// The backend's API as the droplet reaches it, and the admin key: on the droplet, matching the
// backend's INSTANCE_SECRET, and the operator's local copy.
import type { Host } from '../inventory.ts';
import { CONTAINERS } from '../steps/docker.ts';
import { composePath, envPath } from '../steps/secret.ts';
import { apiAddress } from './facts.ts';
import type { DoctorState } from './facts.ts';
import { Findings, run } from './rule.ts';
import type { Context, Finding } from './rule.ts';

/** Only meaningful while the backend answers. */
export function api(host: Host, state: DoctorState, context: Context): Finding[] {
  const found = new Findings(context.found);
  const { healthy, env } = context;
  if (healthy && state.http.version === '000') {
    found.add('backend-unreachable', 'problem', `nothing answers on ${apiAddress(host)}:3210 although ${CONTAINERS.backend} runs`, `check the ports in ${composePath(host)} (bind_address ${host.bind_address}); ${run(host, 'compose')} and ${run(host, 'up')}`);
  }
  if (['401', '403'].includes(state.http.adminKey)) {
    found.add(
      'admin-key',
      'problem',
      `the admin key in ${envPath(host)} is refused by the backend (HTTP ${state.http.adminKey}): it was made with another INSTANCE_SECRET or INSTANCE_NAME than the backend runs with`,
      `if INSTANCE_SECRET was changed by mistake, put the old value back in ${envPath(host)} and ${run(host, 'up')}; otherwise remove the CONVEX_ADMIN_KEY line from ${envPath(host)} and ${run(host, 'admin-key')} (it generates a key for the current secret and rewrites .secrets/${host.name}.env)`,
    );
  } else if (state.http.adminKey === 'none' && healthy && state.env.present) {
    found.add('admin-key-missing', 'warning', `there is no CONVEX_ADMIN_KEY in ${envPath(host)} yet`, `${run(host, 'admin-key')} generates it`);
  } else if (state.http.adminKey === '404' && healthy) {
    // Backends older than /api/check_admin_key cannot be asked; the dashboard treats 404 the same way.
    found.add('admin-key-unchecked', 'warning', 'this backend has no /api/check_admin_key, so whether the admin key still matches could not be checked', 'log in to the dashboard with the key to check it');
  }
  if (state.localAdminKey && env.get('CONVEX_ADMIN_KEY') && state.localAdminKey !== env.get('CONVEX_ADMIN_KEY')) {
    found.add('admin-key-local', 'problem', `.secrets/${host.name}.env on this machine holds another admin key than ${envPath(host)} on the droplet, so the Convex CLI is refused`, `${run(host, 'admin-key')} rewrites .secrets/${host.name}.env`);
  }
  return found.list();
}
