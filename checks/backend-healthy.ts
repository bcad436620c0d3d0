import type { Check } from '../scripts/lib/check.ts';
import { engineRead, parseEngine } from '../scripts/lib/docker-api.ts';
import { CONTAINERS } from '../scripts/lib/steps/up.ts';

/** Docker's health check passes and /version answers 200 on the droplet. */
export const backendHealthy: Check = {
  name: 'backend-healthy',
  probe: () => `${engineRead([{ kind: 'container', name: CONTAINERS.backend }])}; curl -s -o /dev/null -w 'version %{http_code}\\n' --max-time 5 http://127.0.0.1:3210/version`,
  verdict: out => {
    const doc = parseEngine(out)[0]?.doc;
    const health = doc ? (doc.State?.Health?.Status ?? 'no-healthcheck') : '';
    const code = /^version (\d+)$/m.exec(out)?.[1];
    if (health !== 'healthy') return `backend health is "${health || 'missing container'}"`;
    if (code !== '200') return `GET /version answered ${code}`;
    return undefined;
  },
};
