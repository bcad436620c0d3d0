// The fleet's image registry: Debian's docker-registry on the fleet network as registry.test:5000,
// where droplets pull the stand-ins as they would pull from ghcr.io. Port 5000 is also published
// on 127.0.0.1 of the host so the host engine can push (Docker treats 127.0.0.0/8 registries as
// insecure by default, so the host engine needs no configuration).
import http from 'node:http';
import fs from 'node:fs/promises';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { FLEET_LABEL, cacheDir, fleetPrefix } from './paths.ts';
import { REGISTRY_PORT } from './images.ts';
import { docker, dockerOut, waitFor } from './proc.ts';

export const REGISTRY_ALIAS = 'registry.test';

export interface FleetRegistry {
  container: string;
  /** `127.0.0.1:<port>`: where the host pushes. */
  pushPrefix: string;
}

/** Where the registry keeps its data, inside its container. */
const REGISTRY_STORAGE = '/var/lib/docker-registry';

export async function startRegistry(opts: {
  fleetName: string;
  network: string;
  image: string;
  /** Host directory for the registry's storage, so it can be seeded with a copy (see seedOrPush). */
  storageDir: string;
}): Promise<FleetRegistry> {
  const container = `${fleetPrefix(opts.fleetName)}-registry`;
  await fs.mkdir(opts.storageDir, { recursive: true });
  await docker([
    'run', '--detach',
    '--name', container,
    '--label', `${FLEET_LABEL}=${opts.fleetName}`,
    '--network', opts.network,
    '--network-alias', REGISTRY_ALIAS,
    '-v', `${opts.storageDir}:${REGISTRY_STORAGE}`,
    // An ephemeral host port, so fleets side by side never collide.
    '--publish', `127.0.0.1::${REGISTRY_PORT}`,
    opts.image,
  ]);
  return { container, pushPrefix: await registryPushPrefix(container) };
}

/** Read the published host port of a running registry container and wait until it answers. */
export async function registryPushPrefix(container: string): Promise<string> {
  const published = (await dockerOut(['port', container, `${REGISTRY_PORT}/tcp`])).split('\n')[0];
  const port = published.split(':').pop();
  const pushPrefix = `127.0.0.1:${port}`;
  await waitFor(`registry ${pushPrefix}`, 60_000, () =>
    new Promise<true | undefined>((resolve) => {
      // node:http rather than fetch: docker-proxy accepts before the registry listens, and a
      // fetch against that was seen never to settle.
      const request = http.get(`http://${pushPrefix}/v2/`, { timeout: 3000 }, (response) => {
        response.resume();
        resolve(response.statusCode === 200 ? true : undefined);
      });
      request.on('timeout', () => request.destroy());
      request.on('error', () => resolve(undefined));
    }),
  );
  return pushPrefix;
}

/** Push a local image to the fleet registry as `repoAndTag` (e.g. convex-backend:v1). */
export async function pushToRegistry(pushPrefix: string, localRef: string, repoAndTag: string): Promise<void> {
  const remote = `${pushPrefix}/${repoAndTag}`;
  await docker(['tag', localRef, remote]);
  try {
    await docker(['push', remote]);
  } finally {
    // Only a name in the host engine; the image itself stays cached under its own tag.
    await docker(['rmi', remote], { allowFail: true });
  }
}

/** GET/HEAD the registry API from the host; resolves the status code (0 when unreachable). */
function registryStatus(pushPrefix: string, urlPath: string, headers: Record<string, string> = {}): Promise<number> {
  return new Promise((resolve) => {
    const request = http.request(`http://${pushPrefix}${urlPath}`, { method: 'HEAD', headers, timeout: 5000 }, (response) => {
      response.resume();
      resolve(response.statusCode ?? 0);
    });
    request.on('timeout', () => request.destroy());
    request.on('error', () => resolve(0));
    request.end();
  });
}

const MANIFEST_TYPES = [
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.oci.image.index.v1+json',
].join(', ');

const SEEDS_DIR = path.join(cacheDir, 'registry-seeds');
const SEEDS_KEPT = 3;

/**
 * Put `images` (local ref → "repo:tag") into a fleet registry. A push to a new registry makes the
 * engine gzip every layer again (about 15 s for the stand-ins on these 2-core machines), so the
 * first fleet that pushes a given set of images keeps a copy of the registry's storage, and later
 * fleets start from a copy of that instead ("seed", keyed by the image ids and registry image).
 * Each fleet gets its own copy: what a test pushes stays in its fleet. Callers serialize calls
 * (the stand-ins lock), so seeds are never written concurrently by this code.
 */
export async function seedOrPush(opts: {
  registry: FleetRegistry;
  registryImage: string;
  storageDir: string;
  images: Array<{ localRef: string; repoAndTag: string }>;
}): Promise<'seeded' | 'pushed'> {
  const ids: string[] = [];
  for (const image of opts.images) ids.push(await dockerOut(['image', 'inspect', '--format', '{{.Id}}', image.localRef]));
  const key = createHash('sha256')
    .update(JSON.stringify({ registryImage: opts.registryImage, images: opts.images.map((image) => image.repoAndTag), ids }))
    .digest('hex')
    .slice(0, 16);
  const seed = path.join(SEEDS_DIR, key);
  const allServed = async () => {
    for (const { repoAndTag } of opts.images) {
      const [repo, tag] = repoAndTag.split(':');
      const status = await registryStatus(opts.registry.pushPrefix, `/v2/${repo}/manifests/${tag}`, { Accept: MANIFEST_TYPES });
      if (status !== 200) return false;
    }
    return true;
  };
  if (await fs.stat(seed).catch(() => undefined)) {
    await fs.cp(seed, opts.storageDir, { recursive: true, force: true });
    if (await allServed()) return 'seeded';
    // A seed that doesn't serve is not trusted again; push for real below.
    await fs.rm(seed, { recursive: true, force: true });
  }
  for (const image of opts.images) await pushToRegistry(opts.registry.pushPrefix, image.localRef, image.repoAndTag);
  // Snapshot for the next fleets: copy aside, then rename into place (all or nothing).
  await fs.mkdir(SEEDS_DIR, { recursive: true });
  // mkdtemp: two fleets of one process may push the same seed at once.
  const partial = await fs.mkdtemp(`${seed}.partial-`);
  await fs.cp(opts.storageDir, partial, { recursive: true });
  await fs.rename(partial, seed).catch(() => fs.rm(partial, { recursive: true, force: true }));
  await pruneSeeds();
  return 'pushed';
}

async function pruneSeeds(): Promise<void> {
  const entries = await fs.readdir(SEEDS_DIR, { withFileTypes: true });
  const seeds = await Promise.all(
    entries
      .filter((entry) => entry.isDirectory() && !entry.name.includes('.partial-'))
      .map(async (entry) => ({ dir: path.join(SEEDS_DIR, entry.name), mtime: (await fs.stat(path.join(SEEDS_DIR, entry.name))).mtimeMs })),
  );
  seeds.sort((a, b) => b.mtime - a.mtime);
  for (const old of seeds.slice(SEEDS_KEPT)) await fs.rm(old.dir, { recursive: true, force: true });
}
