import type { Check } from '../scripts/lib/check.ts';
import { CONTAINERS } from '../scripts/lib/steps/docker.ts';
import { backendProbe, parseBackendProbe } from './backend-probe.ts';

/** The running containers use exactly the images pinned in the inventory. */
export const imagesPinned: Check = {
  name: 'images-pinned',
  probe: backendProbe,
  verdict: (out, _code, host) => {
    const reading = parseBackendProbe(out);
    const pairs = [
      { container: CONTAINERS.backend, want: host.backend_image, running: reading.backend, pinned: reading.backendImage },
      { container: CONTAINERS.dashboard, want: host.dashboard_image, running: reading.dashboard, pinned: reading.dashboardImage },
    ];
    for (const { container, want, running, pinned } of pairs) {
      const configured = running?.Config?.Image as string | undefined;
      if (configured !== want) return `${container} runs ${configured || 'nothing'}, the inventory pins ${want}`;
      if (!pinned?.Id || running?.Image !== pinned.Id) return `${container} runs an image other than the one ${want} names now`;
    }
    return undefined;
  },
};
