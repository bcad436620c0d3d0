// The test fleet: throwaway "droplets" on a real Docker engine, reached over SSH exactly like
// real ones, plus an image registry holding the Convex stand-ins and an ACME server.
//
//   const fleet = await fleetUp({ name: 'mytest', droplets: [{ name: 'dev', domains: true }] });
//   await fleet.runScript('install.ts', ['--host', 'dev']);   // as a user would run it
//   await fleet.exec('dev', 'docker ps');                      // assertions only
//   await fleet.down();
//
// In node:test files use `useFleet` (or `fleetHooks`), which tears down in an `after` hook and
// on SIGINT/SIGTERM. Everything a fleet creates carries the label convex-ops.fleet=<name> and
// the name prefix cxo-<name>-, so fleets with different names share one engine, and a fleet
// left behind by a crash is removed by the next fleetUp of that name or by `fleetDown(name)`.
import { after as nodeTestAfter, before as nodeTestBefore } from 'node:test';
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { buildStandinImages } from '../standins/build.ts';
import { FLEET_LABEL, fleetDir, fleetPrefix, repoRoot } from './paths.ts';
import { ensureDockerEngine } from './engine.ts';
import { ensureBaseImage, ensureDropletImage, ensurePebbleImage, ensureRegistryImage } from './images.ts';
import type { DropletFlavour } from './images.ts';
import { docker, dockerOut, waitFor } from './proc.ts';
import type { RunResult } from './proc.ts';
import { withLock } from './lock.ts';
import { harvestFleetAptArchives } from './apt-cache.ts';
import { generateFleetKey, knownHostsText, readHostKeys } from './keys.ts';
import { containerIp, startDroplet, waitForPort } from './droplets.ts';
import type { Droplet, DropletSpec, DropletUser } from './droplets.ts';
import { pushToRegistry, registryPushPrefix, seedOrPush, startRegistry } from './registry.ts';
import type { FleetRegistry } from './registry.ts';
import { pebbleOrderCount, startPebble, writeAcmeCaFiles } from './pebble.ts';
import type { FleetPebble } from './pebble.ts';
import { buildInventory, deepMerge, writeInventoryFile } from './inventory.ts';
import type { InventoryObject } from './inventory.ts';

export type { Droplet, DropletFlavour, DropletSpec, DropletUser, InventoryObject, RunResult };
export { ensureDockerEngine };

export interface FleetOptions {
  /** Namespaces everything; default $FLEET_NAME, else "default". Use one per test file. */
  name?: string;
  droplets: DropletSpec[];
  /** Start pebble (ACME). Default: when any droplet has domains. */
  pebble?: boolean;
  /** Build the Convex stand-ins and push them to the fleet registry. Default true. */
  standins?: boolean;
  /** Keep the running fleet of this name when it matches these options, instead of recreating it. */
  reuse?: boolean;
}

export interface ExecOptions {
  /** Return a non-zero exit instead of throwing. */
  allowFail?: boolean;
  /** Run as this user instead of root. */
  user?: string;
  /** Written to the command's stdin. */
  input?: string;
  env?: Record<string, string>;
}

export interface Fleet {
  readonly name: string;
  /** <repo>/.fleet/<name>/: key pair, known_hosts, inventory, CA files, script logs. */
  readonly dir: string;
  readonly inventoryPath: string;
  /** The generated inventory as an object (what inventoryPath holds). */
  readonly inventory: InventoryObject;
  readonly identityPath: string;
  readonly knownHostsPath: string;
  readonly network: string;
  readonly droplets: Readonly<Record<string, Droplet>>;
  /** `127.0.0.1:<port>`: push here from the host (`<prefix>/convex-backend:v3`); droplets pull registry.test:5000/... */
  readonly registryPushPrefix: string;
  /** pebble's HTTPS CA + issuing root(s) (undefined without pebble). */
  readonly acmeCaPath: string | undefined;
  readonly acmeDirectoryUrl: string | undefined;
  /** docker exec as root (or opts.user) running `bash -c shellCmd`. For test assertions, not for doing the product's job. */
  exec(droplet: string, shellCmd: string, opts?: ExecOptions): Promise<RunResult>;
  /** `npx zx scripts/<script> --inventory <inventory> ...args` in the repo root, as a user runs it.
   *  Never throws on a non-zero exit. Pass your own `--inventory` in args to use another file.
   *  `kill` aborted: the run (npx and the script under it) is killed with SIGKILL, as a crash or
   *  an operator's kill -9 would end it. */
  runScript(script: string, args?: string[], env?: NodeJS.ProcessEnv, opts?: { kill?: AbortSignal }): Promise<RunResult>;
  /** Write <dir>/<fileName> (".toml" added if missing): the generated inventory with `overrides`
   *  deep-merged in (a key set to undefined/null is removed). Returns its absolute path. */
  writeInventory(fileName: string, overrides?: InventoryObject): Promise<string>;
  /** Orders pebble has created since it started (0 without pebble). */
  orderCount(): Promise<number>;
  /** Give the droplet new host keys (sshd reloads them). known_hosts is NOT updated, so the next
   *  connection sees a changed host key, as after a rebuild or an attack. Returns the new keys. */
  recreateHostKey(droplet: string): Promise<string[]>;
  /** Re-read every droplet's host keys into known_hosts. */
  refreshKnownHosts(): Promise<void>;
  /** Reboot a systemd droplet (`docker restart`: systemd shuts down and boots again) and wait
   *  until its sshd accepts connections. Nothing else is waited for: what comes back is the test's. */
  reboot(droplet: string): Promise<void>;
  /** Push a local image to the fleet registry as `repoAndTag`, e.g. "convex-backend:v3". */
  pushImage(localRef: string, repoAndTag: string): Promise<void>;
  /** Remove the fleet's containers, volumes and network. Idempotent. */
  down(): Promise<void>;
}

/** What fleetUp records in <dir>/state.json, so `reuse` and the CLI can find a running fleet. */
interface FleetState {
  name: string;
  specs: DropletSpec[];
  withPebble: boolean;
  network: string;
  droplets: Droplet[];
  registry: FleetRegistry;
  pebble: FleetPebble | undefined;
}

const NAME_PATTERN = /^[a-z0-9][a-z0-9-]{0,39}$/;
const DROPLET_NAME_PATTERN = /^[a-z][a-z0-9-]{0,29}$/;
const RESERVED_DROPLET_NAMES = new Set(['registry', 'pebble']);

/** $FLEET_NAMESPACE (e.g. "wt2-") prefixes every fleet name, so that two checkouts can run the
 *  same test files on one engine at once. Applying it twice changes nothing. */
export function resolveFleetName(name?: string): string {
  const namespace = process.env.FLEET_NAMESPACE ?? '';
  const given = name ?? process.env.FLEET_NAME ?? 'default';
  const resolved = given.startsWith(namespace) ? given : `${namespace}${given}`;
  if (!NAME_PATTERN.test(resolved)) throw new Error(`bad fleet name "${resolved}": lowercase letters, digits and dashes`);
  return resolved;
}

function validateSpecs(specs: DropletSpec[]): void {
  const names = new Set<string>();
  for (const spec of specs) {
    if (!DROPLET_NAME_PATTERN.test(spec.name) || RESERVED_DROPLET_NAMES.has(spec.name)) {
      throw new Error(`bad droplet name "${spec.name}"`);
    }
    if (names.has(spec.name)) throw new Error(`droplet "${spec.name}" given twice`);
    if (spec.user !== undefined && spec.user !== 'root' && spec.user !== 'deploy') throw new Error(`bad user for ${spec.name}`);
    names.add(spec.name);
  }
  for (const spec of specs) {
    if (spec.promoteFrom && !names.has(spec.promoteFrom)) throw new Error(`${spec.name}: promoteFrom "${spec.promoteFrom}" is not a droplet`);
  }
}

const paths = (dir: string) => ({
  inventoryPath: path.join(dir, 'inventory.toml'),
  identityPath: path.join(dir, 'id_ed25519'),
  knownHostsPath: path.join(dir, 'known_hosts'),
  acmeCaPath: path.join(dir, 'acme-ca.pem'),
  acmeIntermediatesPath: path.join(dir, 'acme-intermediates.pem'),
  statePath: path.join(dir, 'state.json'),
  /** The fleet registry's storage (bind-mounted), removed with the fleet. */
  registryDir: path.join(dir, 'registry'),
  logsDir: path.join(dir, 'logs'),
});

// ---------------------------------------------------------------------------------------------
// down

/** Remove everything labelled with this fleet: containers (with their anonymous volumes), named
 *  volumes, the network. Works without a Fleet object, e.g. after a crash. */
export async function fleetDown(name: string): Promise<void> {
  const fleetName = resolveFleetName(name);
  const filter = ['--filter', `label=${FLEET_LABEL}=${fleetName}`];
  const list = async (kind: 'container' | 'volume' | 'network') =>
    (await dockerOut(kind === 'container' ? ['ps', '--all', '--quiet', ...filter] : [kind, 'ls', '--quiet', ...filter]))
      .split('\n')
      .filter(Boolean);
  // allowFail and re-check: another teardown of the same fleet (a signal handler, an `after`
  // hook) may be removing the same objects at this very moment.
  const containers = await list('container');
  if (containers.length > 0) await docker(['rm', '--force', '--volumes', ...containers], { allowFail: true });
  await waitFor(`containers of fleet ${fleetName} to be gone`, 60_000, async () => ((await list('container')).length === 0 ? true : undefined));
  const volumes = await list('volume');
  if (volumes.length > 0) await docker(['volume', 'rm', '--force', ...volumes], { allowFail: true });
  const networks = await list('network');
  if (networks.length > 0) await docker(['network', 'rm', ...networks], { allowFail: true });
  await fs.rm(paths(fleetDir(fleetName)).registryDir, { recursive: true, force: true });
  await harvestFleetAptArchives(fleetName);
  const left = [...(await list('volume')), ...(await list('network'))];
  if (left.length > 0) throw new Error(`fleet ${fleetName}: could not remove ${left.join(', ')}`);
}

// ---------------------------------------------------------------------------------------------
// up

const flavoursOf = (specs: DropletSpec[]): DropletFlavour[] => [...new Set(specs.map((spec) => spec.flavour ?? 'debian12'))];

/**
 * The fleet network, with its subnet given explicitly so that droplets can have fixed addresses:
 * a droplet keeps its address across a reboot (`docker restart`), as a real one does. The subnet
 * is the one Docker picks by itself; another fleet may take it between the two steps, so retry.
 */
async function createFleetNetwork(name: string, network: string): Promise<string> {
  for (let attempt = 1; ; attempt++) {
    await docker(['network', 'create', '--label', `${FLEET_LABEL}=${name}`, network]);
    const [subnet, gateway] = (await dockerOut(['network', 'inspect', '--format', '{{ (index .IPAM.Config 0).Subnet }} {{ (index .IPAM.Config 0).Gateway }}', network])).split(' ');
    await docker(['network', 'rm', network]);
    // The gateway too: given a subnet alone, Docker records none, and tests read it (the address
    // the test host reaches the droplets from).
    const created = await docker(['network', 'create', '--label', `${FLEET_LABEL}=${name}`, '--subnet', subnet!, '--gateway', gateway!, network], { allowFail: true });
    if (created.code === 0) return subnet!;
    if (attempt === 5) throw new Error(`cannot create network ${network} on ${subnet}: ${created.stderr}`);
  }
}

/** Droplet addresses from .100 of the subnet on: Docker gives the registry and pebble the lowest ones. */
function dropletAddress(subnet: string, index: number): string {
  const [a, b, c] = subnet.split('/')[0]!.split('.');
  return `${a}.${b}.${c}.${100 + index}`;
}

/** Build (or find) the stand-ins and put them into the fleet registry as convex-backend:<tag>
 *  and convex-dashboard:<tag>. One process at a time: the stand-ins' local tags and the registry
 *  seeds are shared by all fleets on the machine. */
async function provideStandins(opts: { baseImage: string; registry: FleetRegistry; registryImage: string; storageDir: string }): Promise<void> {
  await withLock('standins', async () => {
    const refs = await buildStandinImages({ baseImage: opts.baseImage });
    const images = [
      ...Object.entries(refs.backend).map(([tag, localRef]) => ({ localRef, repoAndTag: `convex-backend:${tag}` })),
      ...Object.entries(refs.dashboard).map(([tag, localRef]) => ({ localRef, repoAndTag: `convex-dashboard:${tag}` })),
    ];
    await seedOrPush({ registry: opts.registry, registryImage: opts.registryImage, storageDir: opts.storageDir, images });
  });
}

/** Wait for every promise, then throw the first failure: nothing may still be creating
 *  containers when the caller cleans up after a failure. */
async function settleAll<T extends readonly unknown[]>(promises: { [K in keyof T]: Promise<T[K]> }): Promise<T> {
  const results = await Promise.allSettled(promises);
  const failed = results.find((result): result is PromiseRejectedResult => result.status === 'rejected');
  if (failed) throw failed.reason;
  return results.map((result) => (result as PromiseFulfilledResult<unknown>).value) as unknown as T;
}

export async function fleetUp(opts: FleetOptions): Promise<Fleet> {
  const name = resolveFleetName(opts.name);
  validateSpecs(opts.droplets);
  const withPebble = opts.pebble ?? opts.droplets.some((spec) => spec.domains);
  const withStandins = opts.standins ?? true;
  const dir = fleetDir(name);
  const files = paths(dir);
  activeFleets.add(name);
  installSignalCleanup();
  await ensureDockerEngine();

  if (opts.reuse) {
    const reused = await tryReuse(name, opts.droplets, withPebble);
    if (reused) {
      if (withStandins) {
        const baseImage = await ensureBaseImage();
        const registryImage = await ensureRegistryImage(baseImage);
        const registry = { container: `${fleetPrefix(name)}-registry`, pushPrefix: reused.registryPushPrefix };
        await provideStandins({ baseImage, registry, registryImage, storageDir: files.registryDir });
      }
      return reused;
    }
  }

  const started = Date.now();
  await fleetDown(name); // whatever an earlier run of this name left behind
  await fs.rm(dir, { recursive: true, force: true });
  await fs.mkdir(dir, { recursive: true });
  const network = fleetPrefix(name);
  // FLEET_VERBOSE=1: when each part is ready, to see where a slow or stuck fleetUp spends its time.
  const step = <T>(what: string, promise: Promise<T>): Promise<T> =>
    process.env.FLEET_VERBOSE === '1'
      ? promise.then((value) => {
          process.stderr.write(`[fleet] ${name}: ${what} after ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
          return value;
        })
      : promise;
  try {
    const subnet = await createFleetNetwork(name, network);
    const base = ensureBaseImage();
    const dropletImages = new Map(flavoursOf(opts.droplets).map((flavour) => [flavour, ensureDropletImage(flavour)] as const));
    const dropletImage = dropletImages.values().next().value ?? ensureDropletImage();
    const registryImage = base.then(ensureRegistryImage);
    const registry = step('registry up', registryImage.then((image) => startRegistry({ fleetName: name, network, image, storageDir: files.registryDir })));
    const pebble = withPebble
      ? step('pebble up', base.then(ensurePebbleImage).then(async (image) => {
          const running = await startPebble({ fleetName: name, network, image });
          await writeAcmeCaFiles(running, files.acmeCaPath, files.acmeIntermediatesPath);
          return running;
        }))
      : Promise.resolve(undefined);
    const key = dropletImage.then((image) => generateFleetKey(dir, `convex-ops-fleet-${name}`, image));
    const droplets = step('droplets up', key.then(({ publicKey }) =>
      settleAll(opts.droplets.map(async (spec, index) => {
        const image = await dropletImages.get(spec.flavour ?? 'debian12')!;
        return startDroplet({ fleetName: name, network, image, authorizedKey: publicKey, spec, ip: dropletAddress(subnet, index) });
      })),
    ));
    const standins = withStandins
      ? step('stand-ins in the registry', Promise.all([base, registry, registryImage]).then(([baseImage, running, image]) =>
          provideStandins({ baseImage, registry: running, registryImage: image, storageDir: files.registryDir }),
        ))
      : Promise.resolve();
    const [startedRegistry, startedPebble, startedDroplets] = await settleAll([registry, pebble, droplets, key, standins] as const);

    const state: FleetState = {
      name,
      specs: opts.droplets,
      withPebble,
      network,
      droplets: startedDroplets,
      registry: startedRegistry,
      pebble: startedPebble,
    };
    await fs.writeFile(files.knownHostsPath, knownHostsText(startedDroplets.map((d) => ({ address: d.ip, hostKeys: d.hostKeys }))));
    const fleet = makeFleet(state);
    await writeInventoryFile(files.inventoryPath, fleet.inventory);
    await fs.writeFile(files.statePath, `${JSON.stringify(state, null, 2)}\n`);
    process.stderr.write(`[fleet] ${name} up in ${((Date.now() - started) / 1000).toFixed(1)} s: ${files.inventoryPath}\n`);
    return fleet;
  } catch (error) {
    await fleetDown(name).catch(() => {});
    throw error;
  }
}

async function tryReuse(name: string, specs: DropletSpec[], withPebble: boolean): Promise<Fleet | undefined> {
  const files = paths(fleetDir(name));
  const state = JSON.parse(await fs.readFile(files.statePath, 'utf8').catch(() => 'null')) as FleetState | null;
  if (!state || JSON.stringify(state.specs) !== JSON.stringify(specs) || state.withPebble !== withPebble) return undefined;
  const containers = [state.registry.container, ...state.droplets.map((d) => d.container)];
  if (state.pebble) containers.push(state.pebble.container);
  for (const container of containers) {
    const running = await docker(['inspect', '--format', '{{.State.Running}}', container], { allowFail: true });
    if (running.stdout.trim() !== 'true') return undefined;
  }
  for (const droplet of state.droplets) {
    if ((await containerIp(droplet.container, state.network)) !== droplet.ip) return undefined;
  }
  // The published port changes when the registry container was restarted.
  state.registry.pushPrefix = await registryPushPrefix(state.registry.container);
  const fleet = makeFleet(state);
  await writeInventoryFile(files.inventoryPath, fleet.inventory);
  await fs.writeFile(files.statePath, `${JSON.stringify(state, null, 2)}\n`);
  return fleet;
}

/** The running fleet of this name as recorded by its fleetUp, or undefined. For the CLI. */
export async function loadFleet(fleetName?: string): Promise<Fleet | undefined> {
  const files = paths(fleetDir(resolveFleetName(fleetName)));
  const state = JSON.parse(await fs.readFile(files.statePath, 'utf8').catch(() => 'null')) as FleetState | null;
  return state ? makeFleet(state) : undefined;
}

// ---------------------------------------------------------------------------------------------
// the Fleet object

let scriptRuns = 0;

function makeFleet(state: FleetState): Fleet {
  const dir = fleetDir(state.name);
  const files = paths(dir);
  const droplets: Record<string, Droplet> = Object.fromEntries(state.droplets.map((d) => [d.name, d]));
  const inventory = buildInventory({
    identityPath: files.identityPath,
    knownHostsPath: files.knownHostsPath,
    droplets: state.specs.map((spec) => ({ spec, droplet: droplets[spec.name] })),
    acme: state.pebble ? { directory: state.pebble.directoryUrl, caBundle: files.acmeCaPath } : undefined,
  });

  const dropletNamed = (droplet: string): Droplet => {
    const found = droplets[droplet];
    if (!found) throw new Error(`fleet ${state.name} has no droplet "${droplet}" (has: ${Object.keys(droplets).join(', ')})`);
    return found;
  };

  const writeKnownHosts = () =>
    fs.writeFile(files.knownHostsPath, knownHostsText(state.droplets.map((d) => ({ address: d.ip, hostKeys: d.hostKeys }))));

  const fleet: Fleet = {
    name: state.name,
    dir,
    inventoryPath: files.inventoryPath,
    inventory,
    identityPath: files.identityPath,
    knownHostsPath: files.knownHostsPath,
    network: state.network,
    droplets,
    registryPushPrefix: state.registry.pushPrefix,
    acmeCaPath: state.pebble ? files.acmeCaPath : undefined,
    acmeDirectoryUrl: state.pebble?.directoryUrl,

    exec(droplet, shellCmd, opts = {}) {
      const args = ['exec'];
      if (opts.input !== undefined) args.push('--interactive');
      if (opts.user) args.push('--user', opts.user);
      for (const [key, value] of Object.entries(opts.env ?? {})) args.push('--env', `${key}=${value}`);
      args.push(dropletNamed(droplet).container, 'bash', '-c', shellCmd);
      return docker(args, { allowFail: opts.allowFail, input: opts.input });
    },

    async runScript(script, args = [], env = {}, opts = {}) {
      const inventoryArgs = args.includes('--inventory') ? [] : ['--inventory', files.inventoryPath];
      const argv = ['zx', path.posix.join('scripts', script), ...inventoryArgs, ...args];
      await fs.mkdir(files.logsDir, { recursive: true });
      const logPath = path.join(files.logsDir, `${String(++scriptRuns).padStart(3, '0')}-${process.pid}-${path.basename(script)}.log`);
      const echo = process.env.FLEET_VERBOSE === '1';
      const result = await new Promise<RunResult>((resolve, reject) => {
        // Its own process group when it may be killed, so that the kill reaches zx's node too.
        const child = spawn('npx', argv, { cwd: repoRoot, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'], detached: opts.kill !== undefined });
        opts.kill?.addEventListener('abort', () => {
          try {
            process.kill(-child.pid!, 'SIGKILL');
          } catch {
            // Already gone.
          }
        });
        let stdout = '';
        let stderr = '';
        child.stdout.on('data', (chunk: Buffer) => {
          stdout += chunk.toString();
          if (echo) process.stderr.write(chunk);
        });
        child.stderr.on('data', (chunk: Buffer) => {
          stderr += chunk.toString();
          if (echo) process.stderr.write(chunk);
        });
        child.on('error', reject);
        child.on('close', (code, signal) => resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr }));
      });
      // Names only: the values may be secrets (a repository password).
      const envNote = Object.keys(env).length > 0 ? `env: ${Object.keys(env).join(' ')}\n` : '';
      await fs.writeFile(
        logPath,
        `$ npx ${argv.join(' ')}\n${envNote}exit: ${result.code}\n--- stdout\n${result.stdout}\n--- stderr\n${result.stderr}`,
      );
      return result;
    },

    writeInventory(fileName, overrides = {}) {
      const file = path.join(dir, fileName.endsWith('.toml') ? fileName : `${fileName}.toml`);
      return writeInventoryFile(file, deepMerge(inventory, overrides));
    },

    async orderCount() {
      return state.pebble ? pebbleOrderCount(state.pebble.container) : 0;
    },

    async recreateHostKey(droplet) {
      const target = dropletNamed(droplet);
      // SIGHUP makes sshd re-exec itself and load the new keys; open sessions stay up.
      await fleet.exec(droplet, 'rm -f /etc/ssh/ssh_host_* && ssh-keygen -A >/dev/null && kill -HUP "$(cat /run/sshd.pid)"');
      const keys = await readHostKeys(target.container);
      await waitForPort(target.ip, 22, 60_000);
      return keys;
    },

    async refreshKnownHosts() {
      for (const droplet of state.droplets) droplet.hostKeys = await readHostKeys(droplet.container);
      await writeKnownHosts();
      await fs.writeFile(files.statePath, `${JSON.stringify(state, null, 2)}\n`);
    },

    async reboot(droplet) {
      const target = dropletNamed(droplet);
      await docker(['restart', target.container]);
      const ip = await containerIp(target.container, state.network);
      if (ip !== target.ip) throw new Error(`${target.container} came back on ${ip}, not ${target.ip}`);
      await waitForPort(target.ip, 22, 120_000);
    },

    pushImage(localRef, repoAndTag) {
      return pushToRegistry(state.registry.pushPrefix, localRef, repoAndTag);
    },

    async down() {
      activeFleets.delete(state.name);
      await fleetDown(state.name);
    },
  };
  return fleet;
}

// ---------------------------------------------------------------------------------------------
// node:test helpers and interruption

const activeFleets = new Set<string>();
let signalCleanupInstalled = false;
let signalled = false;

/**
 * On Ctrl-C or SIGTERM while a fleet made by this process exists, remove it. The removal runs
 * in a detached process (`cli.ts down --after-signal`): the test runner follows Ctrl-C with
 * SIGTERM, closes our output pipes and exits, which would cut a teardown in this process short.
 * A finished `npm run fleet -- up` has exited already, so its fleet stays.
 */
function installSignalCleanup(): void {
  if (signalCleanupInstalled) return;
  signalCleanupInstalled = true;
  for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
    process.on(signal, () => {
      if (signalled) return;
      signalled = true;
      for (const name of activeFleets) {
        const cleanup = spawn(
          process.execPath,
          ['--import', 'tsx', path.join(repoRoot, 'test', 'fleet', 'cli.ts'), 'down', '--name', name, '--after-signal'],
          { cwd: repoRoot, detached: true, stdio: 'ignore' },
        );
        cleanup.unref();
      }
      process.exit(code);
    });
  }
}

interface AfterHooks {
  after(fn: () => Promise<void>): unknown;
}

/**
 * Bring a fleet up for a test file (top level: `const fleet = await useFleet({...})`) or a test
 * (`await useFleet({...}, t)`), and tear it down in that scope's `after`, also when a test fails.
 * The after hook is registered before the fleet starts, so a half-made fleet is removed too.
 */
export async function useFleet(opts: FleetOptions, hooks?: AfterHooks): Promise<Fleet> {
  const name = resolveFleetName(opts.name);
  const teardown = async () => {
    activeFleets.delete(name);
    await fleetDown(name);
  };
  if (hooks) hooks.after(teardown);
  else nodeTestAfter(teardown);
  return fleetUp({ ...opts, name });
}

/**
 * For `describe` blocks, whose callback can't await: registers before/after hooks in the
 * current suite and returns a getter for the fleet, valid inside its tests.
 */
export function fleetHooks(opts: FleetOptions): () => Fleet {
  const name = resolveFleetName(opts.name);
  let fleet: Fleet | undefined;
  nodeTestBefore(async () => {
    fleet = await fleetUp({ ...opts, name });
  });
  nodeTestAfter(async () => {
    activeFleets.delete(name);
    await fleetDown(name);
  });
  return () => {
    if (!fleet) throw new Error(`fleet ${name} is not up (did its before hook fail?)`);
    return fleet;
  };
}
