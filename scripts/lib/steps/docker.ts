// The Docker engine and Compose. Debian 12 ships Compose v1 (docker-compose), newer releases
// and Docker's own packages ship the v2 plugin; every later step works with either.
import type { Fact, Step, StepContext } from '../step.ts';
import { aptInstall, installedPackages, serviceScript } from '../system.ts';
import { sh } from '../shell.ts';
import { engineRead, parseEngine } from '../docker-api.ts';

export interface DockerState { cli: boolean; running: boolean; compose: 'v2' | 'v1' | 'none' }

/** Where the docker CLI looks for plugins ($DOCKER_CONFIG or ~/.docker first): Compose v2 is one. */
const PLUGIN_DIRS = ['"${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"', '/usr/local/lib/docker/cli-plugins', '/usr/local/libexec/docker/cli-plugins', '/usr/lib/docker/cli-plugins', '/usr/libexec/docker/cli-plugins'];

/**
 * The CLI, the engine (its API answers on the socket) and Compose: the v2 plugin where the CLI
 * finds one, else v1's docker-compose. Found by looking, not by running them: every docker or
 * compose process costs more than the rest of a converged run's reading together.
 */
export const dockerState: Fact<DockerState> = {
  key: 'docker',
  command: [
    'command -v docker >/dev/null && echo cli',
    `c=; for d in ${PLUGIN_DIRS.join(' ')}; do if [ -x "$d/docker-compose" ]; then c=compose-v2; break; fi; done`,
    '[ -n "$c" ] || { command -v docker-compose >/dev/null && c=compose-v1; }',
    'echo "$c"',
    engineRead([{ kind: 'version' }]),
  ].join('; '),
  parse: out => ({
    cli: /^cli$/m.test(out),
    running: parseEngine(out)[0]?.status === 200,
    compose: /^compose-v2$/m.test(out) ? 'v2' : /^compose-v1$/m.test(out) ? 'v1' : 'none',
  }),
};

/** The network the Convex containers join; created by us so its subnet is known before they start. */
export const CONVEX_NETWORK = 'convex-ops';

export interface DockerNetworks { bridgeGateway?: string; subnets: string[]; convexNetwork: boolean }

export const dockerNetworks: Fact<DockerNetworks> = {
  key: 'docker-networks',
  command: `${engineRead([{ kind: 'network', name: 'bridge' }, { kind: 'network', name: CONVEX_NETWORK }])}; ip -4 -o addr show docker0 | awk '{print "docker0 " $4}'`,
  parse: out => {
    const [bridge, convex] = parseEngine(out);
    const subnets = new Set<string>();
    let bridgeGateway: string | undefined;
    for (const network of [bridge, convex]) {
      for (const config of (network?.doc?.IPAM?.Config ?? []) as Array<{ Subnet?: string; Gateway?: string }>) {
        if (config.Subnet?.includes('.')) subnets.add(config.Subnet);
        if (network === bridge && config.Gateway) bridgeGateway = config.Gateway;
      }
    }
    // "docker0 172.17.0.1/16": the bridge's own address is where host-gateway points.
    bridgeGateway ??= /^docker0 ([^/\s]+)/m.exec(out)?.[1];
    return { bridgeGateway, subnets: [...subnets].sort(), convexNetwork: convex?.status === 200 };
  },
};

/** The compose command on this host, read from the facts. */
export async function composeCommand(ctx: StepContext): Promise<string> {
  const state = await ctx.fact(dockerState);
  if (state.compose === 'none') {
    if (ctx.check) return 'docker compose';
    throw new Error('Docker Compose is not installed. Run scripts/docker.ts first.');
  }
  return state.compose === 'v2' ? 'docker compose' : 'docker-compose';
}

export const docker: Step = {
  name: 'docker',
  facts: () => [dockerState, installedPackages, dockerNetworks],
  async run(ctx) {
    let state = await ctx.fact(dockerState);
    const packages = await ctx.fact(installedPackages);
    const wanted: string[] = [];
    // Files on disk are not enough while dpkg is half-way through their package: apt finishes
    // (or waits for) that dpkg run before the engine is started.
    const unfinished = (names: string[]) => names.some(name => packages.unfinished.has(name));
    if (!state.cli || unfinished(['docker.io', 'docker-ce'])) wanted.push('docker.io');
    if (!packages.installed.has('curl')) wanted.push('curl');
    if (!packages.installed.has('ca-certificates')) wanted.push('ca-certificates');
    // Compose: the v2 plugin where the distribution packages it, else v1 (Debian 12).
    if (state.compose === 'none' || unfinished(['docker-compose-v2', 'docker-compose-plugin', 'docker-compose'])) wanted.push('docker-compose-v2|docker-compose-plugin|docker-compose');
    if (wanted.length) {
      await ctx.change(`install ${wanted.map(p => p.split('|')[0]).join(', ')}`, () => aptInstall(ctx, wanted));
      state = await ctx.fact(dockerState);
    }
    if (!state.running) {
      await ctx.change('start the Docker engine', () =>
        ctx.run(`${serviceScript('docker', 'enable-start')}; for i in $(seq 60); do docker info >/dev/null 2>&1 && exit 0; sleep 1; done; echo 'dockerd did not answer within 60s' >&2; exit 1`, 'start docker'),
      );
    }
    const networks = await ctx.fact(dockerNetworks);
    if (!networks.convexNetwork) {
      await ctx.change(`create the Docker network ${CONVEX_NETWORK}`, () => ctx.run(sh`docker network create ${CONVEX_NETWORK}`, 'create network'));
    }
    return `engine running, compose ${state.compose}`;
  },
};
