import type { Check } from '../scripts/lib/check.ts';
import { sh } from '../scripts/lib/shell.ts';
import { CONTAINERS } from '../scripts/lib/steps/up.ts';
import { redact } from '../scripts/lib/redact.ts';

/** The backend's logs since its current start. */
const sinceStart = sh`docker logs --since "$(docker inspect --format '{{.State.StartedAt}}' ${CONTAINERS.backend})" ${CONTAINERS.backend} 2>&1`;

/** The backend logged that it connected to its database since it last started. */
export const backendConnected: Check = {
  name: 'backend-connected',
  probe: () => `${sinceStart} | grep -c 'Connected to Postgres database'`,
  verdict: out => (Number(out.trim()) > 0 ? undefined : 'the backend has not logged "Connected to Postgres database" since it started'),
};

/** No ERROR line since the backend started. */
export const noErrors: Check = {
  name: 'no-errors',
  probe: () => `${sinceStart} | grep -E '\\bERROR\\b' | head -n 3`,
  verdict: out => (out.trim() ? redact(`the backend logged errors since it started:\n${out.trim()}`) : undefined),
};
