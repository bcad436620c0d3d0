// Droplets: containers from the droplet image on the fleet network, with sshd as the main
// process and their own Docker engine possible (the Convex backend runs in Docker on them).
import net from 'node:net';
import { FLEET_LABEL, fleetPrefix } from './paths.ts';
import { prepareDropletAptArchives } from './apt-cache.ts';
import { docker, dockerOut, waitFor } from './proc.ts';
import { readHostKeys } from './keys.ts';
import type { DropletFlavour } from './images.ts';

export type DropletUser = 'root' | 'deploy';

export interface DropletSpec {
  /** Hostname, DNS alias <name>.test, inventory host name. Lowercase letters, digits, dashes. */
  name: string;
  /** The ssh user the inventory gives this droplet; "deploy" goes through sudo. Default root. */
  user?: DropletUser;
  /** Give it api.<name>.test, <name>.test and dashboard.<name>.test, and ACME settings. */
  domains?: boolean;
  /** Inventory `promote_from` for this host. */
  promoteFrom?: string;
  /** Mount a volume at /mnt/convex_<name>, like an attached DigitalOcean volume. Default true. */
  volume?: boolean;
  /** Debian 12 with sshd as PID 1 (default), or Debian 13 booting systemd. */
  flavour?: DropletFlavour;
}

export interface Droplet {
  name: string;
  /** Docker container name, cxo-<fleet>-<name>. */
  container: string;
  /** Address on the fleet network; the host reaches it directly. */
  ip: string;
  user: DropletUser;
  /** DNS names other fleet containers resolve to this droplet. */
  aliases: string[];
  /** The data volume's mount point, or undefined when the droplet has none. */
  volumePath: string | undefined;
  /** "ssh-ed25519 AAAA..." etc., ed25519 first. */
  hostKeys: string[];
}

export const dropletContainer = (fleetName: string, droplet: string): string => `${fleetPrefix(fleetName)}-${droplet}`;
export const volumePathFor = (droplet: string): string => `/mnt/convex_${droplet}`;

export function domainsFor(droplet: string): { api: string; site: string; dashboard: string } {
  return { api: `api.${droplet}.test`, site: `${droplet}.test`, dashboard: `dashboard.${droplet}.test` };
}

export function aliasesFor(spec: DropletSpec): string[] {
  const aliases = [`${spec.name}.test`];
  if (spec.domains) {
    const domains = domainsFor(spec.name);
    aliases.push(domains.api, domains.dashboard); // domains.site is <name>.test already
  }
  return aliases;
}

/** Options that let a container run its own dockerd. `--privileged` fails on these hosts
 * ("unable to apply caps": CAP_SYS_RESOURCE is not in the bounding set). */
export const NESTED_DOCKER_OPTIONS = [
  '--cap-add', 'ALL',
  '--cap-drop', 'SYS_RESOURCE',
  '--security-opt', 'seccomp=unconfined',
  '--security-opt', 'apparmor=unconfined',
  '--device-cgroup-rule', 'a *:* rwm',
  '-v', '/sys/fs/cgroup:/sys/fs/cgroup:rw',
  // Docker's tmpfs defaults to noexec; a real droplet's /tmp and /run are not.
  '--tmpfs', '/run:rw,exec,nosuid,nodev,mode=755',
  '--tmpfs', '/tmp:rw,exec,nosuid,nodev,mode=1777',
];

/** What each flavour's main process needs: tini reaps the daemons `service X start` leaves behind;
 *  systemd wants /run/lock, and Debian 13's Docker writes IPv6 sysctls that a container's
 *  read-only /proc/sys would refuse. */
const FLAVOUR_OPTIONS: Record<DropletFlavour, string[]> = {
  debian12: ['--init'],
  'debian13-systemd': ['--tmpfs', '/run/lock', '--security-opt', 'systempaths=unconfined'],
};

async function createVolume(fleetName: string, name: string): Promise<string> {
  await docker(['volume', 'create', '--label', `${FLEET_LABEL}=${fleetName}`, name]);
  return name;
}

export async function startDroplet(opts: {
  fleetName: string;
  network: string;
  image: string;
  authorizedKey: string;
  spec: DropletSpec;
  /** Its fixed address on the fleet network. */
  ip: string;
}): Promise<Droplet> {
  const { fleetName, spec } = opts;
  const container = dropletContainer(fleetName, spec.name);
  const aliases = aliasesFor(spec);
  const volumePath = spec.volume === false ? undefined : volumePathFor(spec.name);
  // Named volumes: /var/lib/docker must not be on the container's overlay root, or the inner
  // engine falls back to the slow vfs driver.
  const dockerVolume = await createVolume(fleetName, `${container}-docker`);
  const mounts = ['--mount', `type=volume,src=${dockerVolume},dst=/var/lib/docker`];
  if (volumePath) {
    mounts.push('--mount', `type=volume,src=${await createVolume(fleetName, `${container}-data`)},dst=${volumePath}`);
  }
  // Its own apt archives, pre-filled from the machine-wide cache (apt-cache.ts says why not shared).
  mounts.push('-v', `${await prepareDropletAptArchives(fleetName, spec.name)}:/var/cache/apt/archives`);
  await docker([
    'run', '--detach',
    '--name', container,
    '--hostname', spec.name,
    '--label', `${FLEET_LABEL}=${fleetName}`,
    '--label', `convex-ops.droplet=${spec.name}`,
    '--network', opts.network,
    '--ip', opts.ip,
    ...aliases.flatMap((alias) => ['--network-alias', alias]),
    ...FLAVOUR_OPTIONS[spec.flavour ?? 'debian12'],
    ...NESTED_DOCKER_OPTIONS,
    ...mounts,
    '--env', `FLEET_AUTHORIZED_KEY=${opts.authorizedKey}`,
    opts.image,
  ]);
  const ip = await containerIp(container, opts.network);
  const hostKeys = await readHostKeys(container);
  await waitForPort(ip, 22, 60_000);
  return { name: spec.name, container, ip, user: spec.user ?? 'root', aliases, volumePath, hostKeys };
}

export async function containerIp(container: string, network: string): Promise<string> {
  const ip = await dockerOut(['inspect', '--format', `{{ (index .NetworkSettings.Networks "${network}").IPAddress }}`, container]);
  if (!/^\d+\.\d+\.\d+\.\d+$/.test(ip)) throw new Error(`${container} has no address on ${network}: "${ip}"`);
  return ip;
}

/** Whether a TCP connection to host:port is accepted within timeoutMs. */
export function portOpen(host: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise(resolve => {
    const socket = net.connect({ host, port, timeout: timeoutMs });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
    socket.once('timeout', () => {
      socket.destroy();
      resolve(false);
    });
  });
}

export function waitForPort(host: string, port: number, timeoutMs: number): Promise<true> {
  return waitFor(`${host}:${port} to accept connections`, timeoutMs, async () => ((await portOpen(host, port, 1000)) ? true : undefined));
}
