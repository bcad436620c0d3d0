// The fleet's image registry: Debian's docker-registry on the fleet network as registry.test:5000,
// where droplets pull the stand-ins as they would pull from ghcr.io. Port 5000 is also published
// on 127.0.0.1 of the host so the host engine can push (Docker treats 127.0.0.0/8 registries as
// insecure by default, so the host engine needs no configuration).
import http from 'node:http';
import { FLEET_LABEL, fleetPrefix } from './paths.ts';
import { REGISTRY_PORT } from './images.ts';
import { docker, dockerOut, waitFor } from './proc.ts';

export const REGISTRY_ALIAS = 'registry.test';

export interface FleetRegistry {
  container: string;
  /** `127.0.0.1:<port>`: where the host pushes. */
  pushPrefix: string;
}

export async function startRegistry(opts: { fleetName: string; network: string; image: string }): Promise<FleetRegistry> {
  const container = `${fleetPrefix(opts.fleetName)}-registry`;
  await docker([
    'run', '--detach',
    '--name', container,
    '--label', `${FLEET_LABEL}=${opts.fleetName}`,
    '--network', opts.network,
    '--network-alias', REGISTRY_ALIAS,
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
  await waitFor(`registry ${pushPrefix}`, 30_000, () =>
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
