import type { Check } from '../scripts/lib/check.ts';
import { BACKEND_VERSION_URL, backendProbe, parseBackendProbe } from './backend-probe.ts';

/** Docker's health check passes and /version answers 200 on the droplet. */
export const backendHealthy: Check = {
  name: 'backend-healthy',
  probe: backendProbe,
  verdict: out => {
    const { backend, http } = parseBackendProbe(out);
    const health = backend ? (backend.State?.Health?.Status ?? 'no-healthcheck') : '';
    const code = http.get(BACKEND_VERSION_URL);
    if (health !== 'healthy') return `backend health is "${health || 'missing container'}"`;
    if (code !== '200') return `GET /version answered ${code}`;
    return undefined;
  },
};
