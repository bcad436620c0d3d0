import type { Check } from '../scripts/lib/check.ts';
import { redact } from '../scripts/lib/redact.ts';
import { backendProbe, parseBackendProbe } from './backend-probe.ts';

/** The backend logged that it connected to its database since it last started. */
export const backendConnected: Check = {
  name: 'backend-connected',
  probe: backendProbe,
  verdict: out => (parseBackendProbe(out).connected > 0 ? undefined : 'the backend has not logged "Connected to Postgres database" since it started'),
};

/** No ERROR line since the backend started. */
export const noErrors: Check = {
  name: 'no-errors',
  probe: backendProbe,
  verdict: out => {
    const { errors } = parseBackendProbe(out);
    return errors.length ? redact(`the backend logged errors since it started:\n${errors.join('\n')}`) : undefined;
  },
};
