import type { Check } from '../scripts/lib/check.ts';

/** The dashboard answers 200 on the droplet. */
export const dashboardAnswers: Check = {
  name: 'dashboard',
  probe: () => `curl -s -o /dev/null -w '%{http_code}' --max-time 5 http://127.0.0.1:6791/`,
  verdict: out => (out.trim() === '200' ? undefined : `the dashboard answered ${out.trim() || 'nothing'} on port 6791`),
};
