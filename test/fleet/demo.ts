// npm run demo [-- down]: the whole runbook on a local fleet, in one command, for someone who has
// no droplet yet. It runs scripts/all.ts exactly as a user would and then says how to look at the
// result and how to try the scripts by hand. A second run reuses the fleet and changes nothing.
import { spawn } from 'node:child_process';
import { relative } from 'node:path';
import { ensureDockerEngine, fleetDown, fleetUp } from './index.ts';
import { repoRoot } from './paths.ts';

// CONVEX_OPS_DEMO_FLEET: another name, so the demo's own e2e test leaves a user's demo alone.
const NAME = process.env.CONVEX_OPS_DEMO_FLEET || 'demo';

function exitWith(message: string): never {
  process.stderr.write(`demo: ${message}\n`);
  process.exit(1);
}

async function main(): Promise<number> {
  const command = process.argv[2] ?? 'up';
  if (command !== 'up' && command !== 'down') exitWith(`unknown command "${command}". Use: npm run demo, or npm run demo -- down`);
  try {
    await ensureDockerEngine();
  } catch (error) {
    exitWith(`no Docker engine runs here and none could be installed (${(error as Error).message.split('\n')[0]}); the demo fleet needs one.`);
  }
  if (command === 'down') {
    await fleetDown(NAME);
    console.log('demo fleet removed (containers, networks, volumes); cached images stay.');
    return 0;
  }
  const fleet = await fleetUp({ name: NAME, droplets: [{ name: 'dev', user: 'root', domains: true }], pebble: true, reuse: true });
  const inventory = relative(repoRoot, fleet.inventoryPath);
  console.log(`\nRunning: npx zx scripts/all.ts --host dev --inventory ${inventory}\n`);
  const code = await new Promise<number>(resolve => {
    const child = spawn('npx', ['zx', 'scripts/all.ts', '--host', 'dev', '--inventory', fleet.inventoryPath], { cwd: repoRoot, stdio: 'inherit' });
    child.on('close', c => resolve(c ?? 1));
  });
  const dev = fleet.droplets.dev!;
  // Absolute, so the curl line works pasted into a shell in any directory.
  const ca = fleet.acmeCaPath!;
  console.log(`
${code === 0 ? 'The demo droplet "dev" runs Convex behind HTTPS.' : `all.ts failed (exit ${code}); see above, or run: npx zx scripts/doctor.ts --host dev --inventory ${inventory}`}

  api        https://api.dev.test        (backend, port 3210)
  site       https://dev.test            (HTTP actions, port 3211)
  dashboard  https://dashboard.dev.test  (port 6791)

These names resolve only inside the fleet's network; from this machine, point them at ${dev.ip}:
  curl --resolve api.dev.test:443:${dev.ip} --cacert ${ca} https://api.dev.test/version

Admin key and URL for the Convex CLI: ${relative(repoRoot, fleet.dir)}/.secrets/dev.env
Inventory: ${inventory}

Try it by hand:
  npx zx scripts/nginx.ts --host dev --inventory ${inventory}          # one script
  npx zx scripts/all.ts --host dev --inventory ${inventory} --check    # dry run: what would change
  npx zx scripts/doctor.ts --host dev --inventory ${inventory}         # diagnose
  npm run demo                                                             # again: reuses the fleet, changes nothing
  npm run demo -- down                                                     # remove everything the demo created
`);
  return code;
}

main().then(code => process.exit(code), error => exitWith((error as Error).message));
