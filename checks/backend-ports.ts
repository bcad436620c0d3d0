import type { Check } from '../scripts/lib/check.ts';
import { sh } from '../scripts/lib/shell.ts';

const PORTS = [3210, 3211, 6791];

/**
 * Behind nginx, or with firewall = true, the backend's ports listen on loopback only, and Docker
 * forwards them only for 127.0.0.1: nothing outside the droplet reaches them except through
 * nginx or an SSH tunnel.
 */
export const backendPortsLocal: Check = {
  name: 'backend-ports-local',
  appliesTo: host => Boolean(host.domains) || host.firewall,
  probe: () => sh`ss -ltnH | awk '{print "listen " $4}'; iptables -t nat -S DOCKER 2>/dev/null | grep -E -- ${`--dport (${PORTS.join('|')})( |$)`} | sed 's/^/nat /'; true`,
  verdict: out => {
    const exposed: string[] = [];
    for (const line of out.split('\n')) {
      const [kind, ...rest] = line.trim().split(' ');
      const text = rest.join(' ');
      if (kind === 'listen') {
        const cut = text.lastIndexOf(':');
        const address = text.slice(0, cut);
        if (PORTS.includes(Number(text.slice(cut + 1))) && address !== '127.0.0.1' && address !== '[::1]') exposed.push(`listening on ${text}`);
      } else if (kind === 'nat' && !/-d 127\.0\.0\.1\/32/.test(text)) {
        exposed.push(`Docker forwards ${text}`);
      }
    }
    return exposed.length ? `backend ports are reachable from outside the droplet: ${exposed.join('; ')}` : undefined;
  },
};
