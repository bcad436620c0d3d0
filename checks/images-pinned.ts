import type { Check } from '../scripts/lib/check.ts';
import { engineRead, parseEngine } from '../scripts/lib/docker-api.ts';
import { CONTAINERS } from '../scripts/lib/steps/up.ts';

const pairs = (host: Parameters<Check['probe']>[0]) => [
  { container: CONTAINERS.backend, want: host.backend_image },
  { container: CONTAINERS.dashboard, want: host.dashboard_image },
];

/** The running containers use exactly the images pinned in the inventory. */
export const imagesPinned: Check = {
  name: 'images-pinned',
  // Both containers, then the image each pinned reference names now: one read of the engine.
  probe: host => engineRead([...pairs(host).map(p => ({ kind: 'container' as const, name: p.container })), ...pairs(host).map(p => ({ kind: 'image' as const, name: p.want }))]),
  verdict: (out, _code, host) => {
    const answers = parseEngine(out);
    const all = pairs(host);
    for (const [i, { container, want }] of all.entries()) {
      const running = answers[i]?.doc;
      const pinned = answers[all.length + i]?.doc;
      const configured = running?.Config?.Image as string | undefined;
      if (configured !== want) return `${container} runs ${configured || 'nothing'}, the inventory pins ${want}`;
      if (!pinned?.Id || running?.Image !== pinned.Id) return `${container} runs an image other than the one ${want} names now`;
    }
    return undefined;
  },
};
