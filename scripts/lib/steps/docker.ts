// The Docker engine and Compose. Debian 12 ships Compose v1 (docker-compose), newer releases
// and Docker's own packages ship the v2 plugin; every later step works with either.
import type { Fact, Step, StepContext } from '../step.ts';
import { aptInstall, installedPackages, serviceScript } from '../system.ts';
import { sh } from '../shell.ts';

export interface DockerState { cli: boolean; running: boolean; compose: 'v2' | 'v1' | 'none' }

export const dockerState: Fact<DockerState> = {
  key: 'docker',
  command: [
    'command -v docker >/dev/null && echo cli',
    "docker info --format 'running {{.ServerVersion}}' 2>/dev/null",
    'if docker compose version >/dev/null 2>&1; then echo compose-v2; elif command -v docker-compose >/dev/null; then echo compose-v1; fi',
  ].join('; '),
  parse: out => ({
    cli: out.includes('cli'),
    running: /running \d/.test(out),
    compose: out.includes('compose-v2') ? 'v2' : out.includes('compose-v1') ? 'v1' : 'none',
  }),
};

/** The network the Convex containers join; created by us so its subnet is known before they start. */
export const CONVEX_NETWORK = 'convex-ops';

export interface DockerNetworks { bridgeGateway?: string; subnets: string[]; convexNetwork: boolean }

export const dockerNetworks: Fact<DockerNetworks> = {
  key: 'docker-networks',
  command: sh`docker network inspect bridge ${CONVEX_NETWORK} --format '{{.Name}}{{range .IPAM.Config}} {{.Subnet}}/{{.Gateway}}{{end}}'; ip -4 -o addr show docker0 | awk '{print "docker0 " $4}'`,
  parse: out => {
    const subnets = new Set<string>();
    let bridgeGateway: string | undefined;
    let convexNetwork = false;
    for (const line of out.split('\n').filter(Boolean)) {
      const [name, ...rest] = line.split(' ');
      if (name === CONVEX_NETWORK) convexNetwork = true;
      for (const entry of rest) {
        if (name === 'docker0') {
          // "172.17.0.1/16": the bridge's own address is where host-gateway points.
          bridgeGateway ??= entry.split('/')[0];
          continue;
        }
        // Subnet "172.18.0.0/16" and gateway joined by "/": split at the last slash.
        const cut = entry.lastIndexOf('/');
        const subnet = entry.slice(0, cut);
        const gateway = entry.slice(cut + 1);
        if (subnet.includes('.')) subnets.add(subnet);
        if (name === 'bridge' && gateway) bridgeGateway = gateway;
      }
    }
    return { bridgeGateway, subnets: [...subnets].sort(), convexNetwork };
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
    if (!state.cli) wanted.push('docker.io');
    if (!packages.has('curl')) wanted.push('curl');
    if (!packages.has('ca-certificates')) wanted.push('ca-certificates');
    // Compose: the v2 plugin where the distribution packages it, else v1 (Debian 12).
    if (state.compose === 'none') wanted.push('docker-compose-v2|docker-compose-plugin|docker-compose');
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
