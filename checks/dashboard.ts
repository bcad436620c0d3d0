import type { Check } from '../scripts/lib/check.ts';
import { backendProbe, DASHBOARD_URL, parseBackendProbe } from './backend-probe.ts';

/** The dashboard answers 200 on the droplet. */
export const dashboardAnswers: Check = {
  name: 'dashboard',
  probe: backendProbe,
  verdict: out => {
    const code = parseBackendProbe(out).http.get(DASHBOARD_URL);
    return code === '200' ? undefined : `the dashboard answered ${code && code !== '000' ? code : 'nothing'} on port 6791`;
  },
};
