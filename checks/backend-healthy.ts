import type { Check } from '../scripts/lib/check.ts';
import { sh } from '../scripts/lib/shell.ts';
import { CONTAINERS } from '../scripts/lib/steps/up.ts';

/** Docker's health check passes and /version answers 200 on the droplet. */
export const backendHealthy: Check = {
  name: 'backend-healthy',
  probe: () => sh`docker inspect --format '{{if .State.Health}}{{.State.Health.Status}}{{else}}no-healthcheck{{end}}' ${CONTAINERS.backend}; curl -s -o /dev/null -w '%{http_code}\n' --max-time 5 http://127.0.0.1:3210/version`,
  verdict: out => {
    const [health, code] = out.trim().split('\n');
    if (health !== 'healthy') return `backend health is "${health || 'missing container'}"`;
    if (code !== '200') return `GET /version answered ${code}`;
    return undefined;
  },
};
