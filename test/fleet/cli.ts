// npm run fleet -- up|down|status [--name N] [--reuse]
//
// `up` leaves a fleet running for manual work: droplets dev (root, with domains) and prod
// (user deploy, with domains, promote_from = "dev"), the registry with the stand-ins, pebble.
import { parseArgs } from 'node:util';
import { fleetDown, fleetUp, loadFleet, resolveFleetName } from './index.ts';
import type { DropletSpec } from './index.ts';
import { FLEET_LABEL } from './paths.ts';
import { docker } from './proc.ts';
import { ensureDockerEngine } from './engine.ts';

export const DEFAULT_DROPLETS: DropletSpec[] = [
  { name: 'dev', user: 'root', domains: true },
  { name: 'prod', user: 'deploy', domains: true, promoteFrom: 'dev' },
];

const usage = `usage: npm run fleet -- <up|down|status|engine> [--name NAME] [--reuse] [--flavour F]

  up      create the fleet (droplets dev and prod, registry, pebble); print the inventory path
  down    remove the fleet's containers, volumes and network (cached images stay)
  status  list the fleet's containers and addresses
  engine  only make sure a Docker engine answers (installs docker.io and starts dockerd if needed)

  --name NAME   fleet name (default: $FLEET_NAME, else "default")
  --reuse       up: keep a running fleet of that name instead of recreating it
  --flavour F   up: the droplets' system, debian12 (sshd as PID 1, the default) or
                debian13-systemd (Debian 13 booting systemd, as a real droplet)`;

async function main(): Promise<number> {
  const { values, positionals } = parseArgs({
    options: {
      name: { type: 'string' },
      reuse: { type: 'boolean' },
      flavour: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
      // Internal: run by a test process that got Ctrl-C/SIGTERM (index.ts). Its docker commands
      // may still create a container after a first pass, so make a second one a little later.
      'after-signal': { type: 'boolean' },
    },
    allowPositionals: true,
  });
  const command = positionals[0];
  if (values.help || !command || positionals.length > 1) {
    console.log(usage);
    return values.help ? 0 : 2;
  }
  const name = resolveFleetName(values.name);
  await ensureDockerEngine();
  switch (command) {
    case 'engine':
      console.log('Docker engine answers');
      return 0;
    case 'up': {
      const flavour = values.flavour ?? 'debian12';
      if (flavour !== 'debian12' && flavour !== 'debian13-systemd') throw new Error(`--flavour: "${flavour}" is neither debian12 nor debian13-systemd`);
      const droplets = DEFAULT_DROPLETS.map((spec): DropletSpec => ({ ...spec, flavour }));
      const fleet = await fleetUp({ name, droplets, pebble: true, reuse: values.reuse });
      console.log(`fleet "${fleet.name}" is up.\n`);
      for (const droplet of Object.values(fleet.droplets)) {
        console.log(`  ${droplet.name.padEnd(6)} ${droplet.ip.padEnd(15)} ssh ${droplet.user}  aliases: ${droplet.aliases.join(' ')}`);
      }
      console.log(`
inventory:   ${fleet.inventoryPath}
ssh:         ssh -i ${fleet.identityPath} -o UserKnownHostsFile=${fleet.knownHostsPath} root@${fleet.droplets.dev.ip}
registry:    droplets pull registry.test:5000/convex-backend:v1; push from here to ${fleet.registryPushPrefix}/<repo>:<tag>
ACME:        ${fleet.acmeDirectoryUrl} (CA bundle: ${fleet.acmeCaPath})

Run the scripts against it as a user would:
  npx zx scripts/install.ts --host dev --inventory ${fleet.inventoryPath}

Remove it with: npm run fleet -- down${name === 'default' ? '' : ` --name ${name}`}`);
      return 0;
    }
    case 'down':
      await fleetDown(name);
      if (values['after-signal']) {
        await new Promise((resolve) => setTimeout(resolve, 5000));
        await fleetDown(name);
      }
      console.log(`fleet "${name}" removed`);
      return 0;
    case 'status': {
      const listing = await docker([
        'ps', '--all', '--filter', `label=${FLEET_LABEL}=${name}`,
        '--format', `{{.Names}}\t{{.Status}}\t{{.Ports}}`,
      ]);
      const rows = listing.stdout.trim();
      if (!rows) {
        console.log(`fleet "${name}": no containers`);
        return 0;
      }
      const fleet = await loadFleet(name);
      const addresses = await docker([
        'inspect', '--format', '{{.Name}} {{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}',
        ...rows.split('\n').map((row) => row.split('\t')[0]),
      ]);
      const ipOf = new Map(addresses.stdout.trim().split('\n').map((line) => {
        const [container, ip] = line.split(' ');
        return [container.replace(/^\//, ''), ip ?? ''] as const;
      }));
      console.log(`fleet "${name}":`);
      for (const row of rows.split('\n')) {
        const [container, status, ports] = row.split('\t');
        console.log(`  ${container.padEnd(28)} ${(ipOf.get(container) ?? '').padEnd(15)} ${status}${ports ? `  ${ports}` : ''}`);
      }
      if (fleet) console.log(`inventory: ${fleet.inventoryPath}`);
      return 0;
    }
    default:
      console.error(usage);
      return 2;
  }
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(error instanceof Error ? error.message : error);
    process.exit(1);
  },
);
