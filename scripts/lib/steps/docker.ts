// The Docker engine and Compose. Debian 12 ships Compose v1 (docker-compose), newer releases
// and Docker's own packages ship the v2 plugin; every later step works with either.
import type { Fact, Step } from '../step.ts';
import { exitWhen, installedPackages, serviceScript } from '../system.ts';
import { installChange, phase } from '../plan.ts';
import type { Change } from '../plan.ts';
import type { Packages } from '../system.ts';
import type { Script } from '../shell.ts';
import { lines, script, sh } from '../shell.ts';
import { engineRead, parseEngine } from '../docker-api.ts';
import type { EngineAnswer, EngineObject } from '../docker-api.ts';

export interface DockerState { cli: boolean; engine: boolean; running: boolean; compose: 'v2' | 'v1' | 'none' }

/** Where the docker CLI looks for plugins ($DOCKER_CONFIG or ~/.docker first): Compose v2 is one. */
const PLUGIN_DIRS = sh`"\${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins" /usr/local/lib/docker/cli-plugins /usr/local/libexec/docker/cli-plugins /usr/lib/docker/cli-plugins /usr/libexec/docker/cli-plugins`;

/** The network the Convex containers join; created by us so its subnet is known before they start. */
export const CONVEX_NETWORK = 'convex-ops';

export const CONTAINERS = { backend: 'convex-backend', dashboard: 'convex-dashboard' } as const;

const ENGINE_OBJECTS: EngineObject[] = [
  { kind: 'version' },
  { kind: 'network', name: 'bridge' },
  { kind: 'network', name: CONVEX_NETWORK },
  { kind: 'container', name: CONTAINERS.backend },
  { kind: 'container', name: CONTAINERS.dashboard },
];

interface EngineSnapshot {
  cli: boolean;
  /** dockerd is on disk: the CLI alone (Debian 13's docker-cli) is not the engine. */
  engine: boolean;
  compose: DockerState['compose'];
  version: EngineAnswer;
  bridge: EngineAnswer;
  convexNetwork: EngineAnswer;
  backend: EngineAnswer;
  dashboard: EngineAnswer;
  /** docker0's own address, e.g. "172.17.0.1". */
  docker0?: string;
}

/**
 * What the steps know of Docker, as one reading: the CLI and Compose found by looking, not by
 * running them (every docker or compose process costs more than the rest of a converged run's
 * reading together), and one request to the engine for its version, both networks and both
 * containers. The facts below are views of that one reading.
 */
export function engineView<T>(view: (engine: EngineSnapshot) => T): Fact<T> {
  return {
    key: 'docker-engine',
    command: [
      sh`command -v docker >/dev/null && echo cli`,
      sh`command -v dockerd >/dev/null && echo engine`,
      script`c=; for d in ${PLUGIN_DIRS}; do if [ -x "$d/docker-compose" ]; then c=compose-v2; break; fi; done`,
      sh`[ -n "$c" ] || { command -v docker-compose >/dev/null && c=compose-v1; }`,
      sh`echo "$c"`,
      engineRead(ENGINE_OBJECTS),
      sh`ip -4 -o addr show docker0 | awk '{print "docker0 " $4}'`,
    ].reduce((done, next) => script`${done}; ${next}`),
    parse: out => {
      const [version, bridge, convexNetwork, backend, dashboard] = parseEngine(out);
      const missing: EngineAnswer = { status: 0 };
      return view({
        cli: /^cli$/m.test(out),
        engine: /^engine$/m.test(out),
        compose: /^compose-v2$/m.test(out) ? 'v2' : /^compose-v1$/m.test(out) ? 'v1' : 'none',
        version: version ?? missing,
        bridge: bridge ?? missing,
        convexNetwork: convexNetwork ?? missing,
        backend: backend ?? missing,
        dashboard: dashboard ?? missing,
        // "docker0 172.17.0.1/16": the bridge's own address is where host-gateway points.
        docker0: /^docker0 ([^/\s]+)/m.exec(out)?.[1],
      });
    },
  };
}

/** The CLI, the engine (its API answers on the socket) and Compose: the v2 plugin where the CLI finds one, else v1's docker-compose. */
export const dockerState: Fact<DockerState> = engineView(engine => ({ cli: engine.cli, engine: engine.engine, running: engine.version.status === 200, compose: engine.compose }));

export interface DockerNetworks { bridgeGateway?: string; subnets: string[]; convexNetwork: boolean }

export const dockerNetworks: Fact<DockerNetworks> = engineView(engine => {
  const subnets = new Set<string>();
  let bridgeGateway: string | undefined;
  for (const network of [engine.bridge, engine.convexNetwork]) {
    for (const config of (network.doc?.IPAM?.Config ?? []) as Array<{ Subnet?: string; Gateway?: string }>) {
      if (config.Subnet?.includes('.')) subnets.add(config.Subnet);
      if (network === engine.bridge && config.Gateway) bridgeGateway = config.Gateway;
    }
  }
  return { bridgeGateway: bridgeGateway ?? engine.docker0, subnets: [...subnets].sort(), convexNetwork: engine.convexNetwork.status === 200 };
});

export interface ContainerState { status: string; health: string; startedAt: string; configImage: string; imageId: string; restarts: number; composeProject?: string }

/** The Convex containers that exist, by name. */
export const containersFact: Fact<Map<string, ContainerState>> = engineView(engine => {
  const containers = new Map<string, ContainerState>();
  for (const { doc } of [engine.backend, engine.dashboard]) {
    if (!doc) continue;
    containers.set(String(doc.Name).replace(/^\//, ''), {
      status: doc.State?.Status ?? '',
      health: doc.State?.Health?.Status ?? '',
      startedAt: doc.State?.StartedAt ?? '',
      configImage: doc.Config?.Image ?? '',
      imageId: doc.Image ?? '',
      restarts: Number(doc.RestartCount ?? 0),
      composeProject: doc.Config?.Labels?.['com.docker.compose.project'] || undefined,
    });
  }
  return containers;
});

/** The compose command the facts found: `docker compose` (v2) or `docker-compose` (v1); none without Compose. */
export function composeCommandOf(state: DockerState): Script | undefined {
  return state.compose === 'v2' ? sh`docker compose` : state.compose === 'v1' ? sh`docker-compose` : undefined;
}

export const COMPOSE_MISSING = 'Docker Compose is not installed. Run scripts/docker.ts first.';

/** The compose command, for a step that cannot plan without it. */
export function requireCompose(state: DockerState): Script {
  const compose = composeCommandOf(state);
  if (!compose) throw new Error(COMPOSE_MISSING);
  return compose;
}

/** The packages (apt alternatives joined by |) the docker step installs, given what is there. */
export function dockerPackagesWanted(state: DockerState, packages: Packages): string[] {
  const wanted: string[] = [];
  // Files on disk are not enough while dpkg is half-way through their package: apt finishes
  // (or waits for) that dpkg run before the engine is started.
  const unfinished = (names: string[]) => names.some(name => packages.unfinished.has(name));
  // A half-installed docker-ce (Docker's own package) is finished as itself: docker.io conflicts with it.
  if (packages.unfinished.has('docker-ce')) wanted.push('docker-ce');
  else if (!state.engine || unfinished(['docker.io'])) wanted.push('docker.io');
  // Debian 13 split the CLI into docker-cli, which docker.io only recommends; before that
  // (Debian 12, Ubuntu 22.04) docker.io holds the CLI itself.
  if (!state.cli) wanted.push(packages.installed.has('docker-ce') ? 'docker-ce-cli' : 'docker-cli|docker.io');
  if (!packages.installed.has('curl')) wanted.push('curl');
  if (!packages.installed.has('ca-certificates')) wanted.push('ca-certificates');
  // Compose: the v2 plugin where the distribution packages it, else v1 (Debian 12).
  if (state.compose === 'none' || unfinished(['docker-compose-v2', 'docker-compose-plugin', 'docker-compose'])) wanted.push('docker-compose-v2|docker-compose-plugin|docker-compose');
  return wanted;
}

/** What is missing of the engine, its CLI and Compose, installed in one apt run. */
export function planDockerPackages({ state, packages }: { state: DockerState; packages: Packages }): Change[] {
  const wanted = dockerPackagesWanted(state, packages);
  return wanted.length ? [installChange(wanted)] : [];
}

/** How long the engine may take to answer once started (its first start sets up iptables and docker0). */
const ENGINE_START_SECONDS = 60;

export function planEngine({ state }: { state: DockerState }): Change[] {
  if (state.running) return [];
  return [{
    label: 'start the Docker engine',
    script: lines(serviceScript('docker', 'enable-start'), exitWhen(sh`docker info >/dev/null 2>&1`, ENGINE_START_SECONDS, `dockerd did not answer within ${ENGINE_START_SECONDS}s`)),
  }];
}

export function planNetwork({ networks }: { networks: DockerNetworks }): Change[] {
  return networks.convexNetwork ? [] : [{ label: `create the Docker network ${CONVEX_NETWORK}`, script: sh`docker network create ${CONVEX_NETWORK}` }];
}

/**
 * Three snapshots: the packages; the engine, once installed (its package may have started it);
 * the network, once the engine answers (a stopped engine tells nothing of its networks).
 */
export const docker: Step = {
  name: 'docker',
  phases: [
    phase({ facts: () => ({ state: dockerState, packages: installedPackages }), plan: planDockerPackages }),
    phase({ facts: () => ({ state: dockerState }), plan: planEngine }),
    phase({
      facts: () => ({ state: dockerState, networks: dockerNetworks }),
      plan: planNetwork,
      ok: ({ state }) => `engine running, compose ${state.compose}`,
    }),
  ],
};
