// The fleet's ACME server: Debian's pebble on the fleet network as pebble.test (and pebble).
// It validates HTTP-01 on port 80 of the name being certified, resolving droplet aliases
// through Docker's embedded DNS, so certificates are issued for real.
import https from 'node:https';
import fs from 'node:fs/promises';
import { FLEET_LABEL, fleetPrefix } from './paths.ts';
import { PEBBLE_HTTPS_CA_PATH, PEBBLE_LISTEN_PORT, PEBBLE_MANAGEMENT_PORT } from './images.ts';
import { docker, dockerOut, waitFor } from './proc.ts';
import { containerIp } from './droplets.ts';

export const PEBBLE_ALIASES = ['pebble.test', 'pebble'];
/** What droplets use as the ACME directory URL; pebble.test is in its certificate (ours). */
export const PEBBLE_DIRECTORY_URL = `https://pebble.test:${PEBBLE_LISTEN_PORT}/dir`;

export interface FleetPebble {
  container: string;
  ip: string;
  directoryUrl: string;
}

/** GET https://<ip>:<port><path>, verifying pebble's certificate for the name "pebble". */
function httpsGet(ip: string, port: number, urlPath: string, ca: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const request = https.get({ host: ip, port, path: urlPath, ca, servername: 'pebble', timeout: 5000 }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      response.on('error', reject);
    });
    request.on('timeout', () => request.destroy(new Error('timeout')));
    request.on('error', reject);
  });
}

export async function startPebble(opts: { fleetName: string; network: string; image: string }): Promise<FleetPebble> {
  const container = `${fleetPrefix(opts.fleetName)}-pebble`;
  await docker([
    'run', '--detach',
    '--name', container,
    '--label', `${FLEET_LABEL}=${opts.fleetName}`,
    '--network', opts.network,
    ...PEBBLE_ALIASES.flatMap((alias) => ['--network-alias', alias]),
    opts.image,
  ]);
  const ip = await containerIp(container, opts.network);
  return { container, ip, directoryUrl: PEBBLE_DIRECTORY_URL };
}

/**
 * Write the one CA file the fleet's ACME users need: pebble's HTTPS CA (so certbot trusts the
 * ACME API) followed by the root(s) pebble issues under (so issued chains can be verified).
 * Pebble makes new issuing keys every time it starts: the file is valid for this container only.
 * Intermediates go to a second file next to it, for chain checks that want them.
 */
export async function writeAcmeCaFiles(pebble: FleetPebble, caPath: string, intermediatesPath: string): Promise<void> {
  const httpsCa = await dockerOut(['exec', pebble.container, 'cat', PEBBLE_HTTPS_CA_PATH]);
  await waitFor(`pebble directory at ${pebble.ip}:${PEBBLE_LISTEN_PORT}`, 60_000, async () => {
    const response = await httpsGet(pebble.ip, PEBBLE_LISTEN_PORT, '/dir', httpsCa);
    return response.status === 200 ? true : undefined;
  });
  const fetchAll = async (kind: 'roots' | 'intermediates'): Promise<string[]> => {
    // /roots/0 is the main chain's; /roots/1... exist when PEBBLE_ALTERNATE_ROOTS is set.
    const pems: string[] = [];
    for (let index = 0; ; index++) {
      const response = await httpsGet(pebble.ip, PEBBLE_MANAGEMENT_PORT, `/${kind}/${index}`, httpsCa);
      if (response.status !== 200) break;
      pems.push(response.body.trim());
    }
    if (pems.length === 0) throw new Error(`pebble's management API returned no ${kind}`);
    return pems;
  };
  const roots = await fetchAll('roots');
  const intermediates = await fetchAll('intermediates');
  await fs.writeFile(caPath, `${[httpsCa.trim(), ...roots].join('\n')}\n`);
  await fs.writeFile(intermediatesPath, `${intermediates.join('\n')}\n`);
}

/**
 * How many orders pebble has created since it started. Pebble keeps no order list in its
 * management API, but logs "There are now N orders in the db" on every new-order request, so
 * the last such line is the count (certbot reusing a valid certificate creates none).
 */
export async function pebbleOrderCount(container: string): Promise<number> {
  const logs = await docker(['logs', container]);
  const counts = `${logs.stdout}\n${logs.stderr}`.matchAll(/There are now (\d+) orders in the db/g);
  let last = 0;
  for (const match of counts) last = Math.max(last, Number(match[1]));
  return last;
}
