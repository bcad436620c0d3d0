import type { Check } from '../scripts/lib/check.ts';
import { sh } from '../scripts/lib/shell.ts';
import { CONTAINERS } from '../scripts/lib/steps/up.ts';

/** The running containers use exactly the images pinned in the inventory. */
export const imagesPinned: Check = {
  name: 'images-pinned',
  probe: host =>
    sh`for pair in ${[`${CONTAINERS.backend}=${host.backend_image}`, `${CONTAINERS.dashboard}=${host.dashboard_image}`]}; do ` +
    `c=\${pair%%=*}; ref=\${pair#*=}; echo "$c $(docker inspect --format '{{.Config.Image}} {{.Image}}' "$c") $(docker image inspect --format '{{.Id}}' "$ref")"; done`,
  verdict: (out, _code, host) => {
    for (const line of out.trim().split('\n')) {
      const [container, configured, running, pinned] = line.split(' ');
      const want = container === CONTAINERS.backend ? host.backend_image : host.dashboard_image;
      if (configured !== want) return `${container} runs ${configured || 'nothing'}, the inventory pins ${want}`;
      if (!pinned || running !== pinned) return `${container} runs an image other than the one ${want} names now`;
    }
    return undefined;
  },
};
