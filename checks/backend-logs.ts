import type { Check } from '../scripts/lib/check.ts';
import { sh } from '../scripts/lib/shell.ts';
import { engineRead } from '../scripts/lib/docker-api.ts';
import { CONTAINERS } from '../scripts/lib/steps/up.ts';
import { redact } from '../scripts/lib/redact.ts';

/**
 * The backend's logs since its current start (the engine's StartedAt), read once for both checks
 * below (their probe is the same command, so it runs once): how many lines say it connected to
 * its database, and the first three ERROR lines.
 */
const AWK = `index($0, "Connected to Postgres database") { connected++ }
/(^|[^A-Za-z0-9_])ERROR([^A-Za-z0-9_]|$)/ && errors < 3 { errors++; print "error " $0 }
END { print "connected " connected + 0 }`;
const startedAt = `${engineRead([{ kind: 'container', name: CONTAINERS.backend }])} | sed -n 's/.*"StartedAt": *"\\([^"]*\\)".*/\\1/p' | head -n 1`;
const probe = () => `started=$(${startedAt}); ` + sh`docker logs --since "$started" ${CONTAINERS.backend} 2>&1 | awk ${AWK}`;

/** The backend logged that it connected to its database since it last started. */
export const backendConnected: Check = {
  name: 'backend-connected',
  probe,
  verdict: out => (Number(/^connected (\d+)$/m.exec(out)?.[1] ?? 0) > 0 ? undefined : 'the backend has not logged "Connected to Postgres database" since it started'),
};

/** No ERROR line since the backend started. */
export const noErrors: Check = {
  name: 'no-errors',
  probe,
  verdict: out => {
    const errors = out.split('\n').filter(l => l.startsWith('error ')).map(l => l.slice(6));
    return errors.length ? redact(`the backend logged errors since it started:\n${errors.join('\n')}`) : undefined;
  },
};
