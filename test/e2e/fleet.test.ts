// The test fleet itself (issue 2, "done when"): droplets reached over SSH with host-key
// verification, as root and as deploy with sudo; Docker inside a droplet pulling a stand-in from
// the fleet registry; the stand-in refusing a POSTGRES_URL with a database name and an admin key
// made with another secret; and a teardown that leaves nothing of the fleet behind.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import TOML from '@iarna/toml';
import { NodeSSH } from 'node-ssh';
import { useFleet } from '../fleet/index.ts';
import type { Fleet } from '../fleet/index.ts';
import { docker } from '../fleet/proc.ts';

const FLEET_NAME = 'fleettest';
const BACKEND = 'registry.test:5000/convex-backend:v1';

const fleet: Fleet = await useFleet({
  name: FLEET_NAME,
  droplets: [
    { name: 'alpha', user: 'root', domains: true },
    { name: 'beta', user: 'deploy' },
  ],
});

/** known_hosts → address → base64 host key blobs. Deliberately tiny: the product has its own. */
async function readKnownHosts(file: string): Promise<Map<string, Set<string>>> {
  const known = new Map<string, Set<string>>();
  for (const line of (await fs.readFile(file, 'utf8')).split('\n')) {
    const [hosts, , blob] = line.trim().split(/\s+/);
    if (!hosts || !blob || hosts.startsWith('#')) continue;
    for (const host of hosts.split(',')) {
      if (!known.has(host)) known.set(host, new Set());
      known.get(host)!.add(blob);
    }
  }
  return known;
}

/** Connect with host-key verification on: the server's key must be one known for `address`. */
async function sshConnect(address: string, username: string, knownFor: string = address): Promise<NodeSSH> {
  const known = (await readKnownHosts(fleet.knownHostsPath)).get(knownFor) ?? new Set<string>();
  const ssh = new NodeSSH();
  return ssh.connect({
    host: address,
    username,
    privateKeyPath: fleet.identityPath,
    readyTimeout: 15_000,
    hostVerifier: (key: Buffer) => known.has(key.toString('base64')),
  });
}

test('the fleet writes a usable inventory, key pair and known_hosts', async () => {
  const inventory = TOML.parse(await fs.readFile(fleet.inventoryPath, 'utf8')) as Record<string, any>;
  assert.equal(inventory.defaults.identity, fleet.identityPath);
  assert.equal(inventory.defaults.known_hosts, fleet.knownHostsPath);
  assert.equal(inventory.defaults.backend_image, BACKEND);
  assert.equal(inventory.hosts.alpha.address, fleet.droplets.alpha.ip);
  assert.equal(inventory.hosts.alpha.volume, '/mnt/convex_alpha');
  assert.equal(inventory.hosts.alpha.domains.api, 'api.alpha.test');
  assert.equal(inventory.hosts.alpha.acme.ca_bundle, fleet.acmeCaPath);
  assert.equal(inventory.hosts.beta.user, 'deploy');
  assert.equal(inventory.hosts.beta.domains, undefined);
  const known = await readKnownHosts(fleet.knownHostsPath);
  assert.ok(known.get(fleet.droplets.alpha.ip)?.size, 'alpha is in known_hosts');
  assert.ok(known.get(fleet.droplets.beta.ip)?.size, 'beta is in known_hosts');

  // Variants for tests of bad input: merged over the generated inventory, undefined removes.
  const variant = await fleet.writeInventory('no-volume', { hosts: { alpha: { volume: undefined, port: 2222 } } });
  const parsed = TOML.parse(await fs.readFile(variant, 'utf8')) as Record<string, any>;
  assert.equal(parsed.hosts.alpha.volume, undefined);
  assert.equal(parsed.hosts.alpha.port, 2222);
  assert.equal(parsed.hosts.alpha.address, fleet.droplets.alpha.ip);
});

test('SSH as root, with host-key verification on', async () => {
  const ssh = await sshConnect(fleet.droplets.alpha.ip, 'root');
  try {
    const result = await ssh.execCommand('id -u; hostname; test -d /mnt/convex_alpha && echo volume-ok');
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(result.stdout.split('\n'), ['0', 'alpha', 'volume-ok']);
  } finally {
    ssh.dispose();
  }
  // The verifier really is consulted: alpha does not present beta's host key.
  await assert.rejects(sshConnect(fleet.droplets.alpha.ip, 'root', fleet.droplets.beta.ip));
});

test('SSH as deploy, with passwordless sudo', async () => {
  const ssh = await sshConnect(fleet.droplets.beta.ip, 'deploy');
  try {
    const whoami = await ssh.execCommand('id -un; hostname');
    assert.deepEqual(whoami.stdout.split('\n'), ['deploy', 'beta']);
    const sudo = await ssh.execCommand('sudo -n true && sudo -n id -u');
    assert.equal(sudo.code, 0, sudo.stderr);
    assert.equal(sudo.stdout, '0');
  } finally {
    ssh.dispose();
  }
});

test('the ACME server answers droplets with the fleet CA bundle', async () => {
  assert.ok(fleet.acmeCaPath && fleet.acmeDirectoryUrl);
  const bundle = await fs.readFile(fleet.acmeCaPath, 'utf8');
  assert.ok((bundle.match(/BEGIN CERTIFICATE/g) ?? []).length >= 2, 'pebble HTTPS CA + issuing root');
  // docker cp can't write into the droplet's /tmp (a tmpfs), so pipe it in.
  await fleet.exec('alpha', 'cat > /root/acme-ca.pem', { input: bundle });
  const dir = await fleet.exec('alpha', `curl -fsS --cacert /root/acme-ca.pem ${fleet.acmeDirectoryUrl}`);
  assert.match(dir.stdout, /"newOrder"/);
  assert.equal(await fleet.orderCount(), 0);
});

test('Docker inside a droplet pulls a stand-in from the fleet registry', { timeout: 10 * 60_000 }, async () => {
  // What the product will do on a real droplet; here only to prove the droplet can run Docker.
  await fleet.exec(
    'alpha',
    'export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq --no-install-recommends docker.io >/tmp/apt.log 2>&1 || { tail -20 /tmp/apt.log; exit 1; }',
  );
  await fleet.exec('alpha', 'service docker start && for i in $(seq 1 60); do docker info >/dev/null 2>&1 && exit 0; sleep 0.5; done; tail -20 /var/log/docker.log; exit 1');
  const info = await fleet.exec('alpha', "docker info --format '{{.Driver}}'");
  assert.equal(info.stdout.trim(), 'overlay2');
  const pull = await fleet.exec('alpha', `docker pull ${BACKEND}`, { allowFail: true });
  assert.equal(pull.code, 0, pull.stderr);
  const version = await fleet.exec('alpha', `docker image inspect --format '{{ index .Config.Labels "org.opencontainers.image.version" }}' ${BACKEND}`);
  assert.equal(version.stdout.trim(), 'v1');
});

test('the stand-in refuses a POSTGRES_URL that contains a database name', async () => {
  const run = await fleet.exec(
    'alpha',
    `docker run --rm -e INSTANCE_SECRET=${'ab'.repeat(32)} -e POSTGRES_URL=postgres://convex:secret@host.docker.internal:5432/convex_self_hosted ${BACKEND}`,
    { allowFail: true },
  );
  assert.notEqual(run.code, 0);
  assert.match(run.stderr, /cluster url already contains db name: \/convex_self_hosted/);
});

test('the stand-in refuses an admin key made with another secret', async () => {
  const secret = 'a1'.repeat(32);
  const otherSecret = 'b2'.repeat(32);
  await fleet.exec('alpha', `docker run -d --name standin -p 127.0.0.1:3210:3210 -e INSTANCE_SECRET=${secret} ${BACKEND}`);
  await fleet.exec('alpha', 'for i in $(seq 1 60); do curl -fsS http://127.0.0.1:3210/version && exit 0; sleep 0.5; done; docker logs standin; exit 1');
  const goodKey = (await fleet.exec('alpha', 'docker exec standin /convex/generate_admin_key.sh')).stdout.trim();
  const otherKey = (await fleet.exec('alpha', `docker run --rm -e INSTANCE_SECRET=${otherSecret} ${BACKEND} /convex/generate_admin_key.sh`)).stdout.trim();
  assert.match(goodKey, /^convex-self-hosted\|[0-9a-f]+$/);
  assert.match(otherKey, /^convex-self-hosted\|[0-9a-f]+$/);
  assert.notEqual(goodKey, otherKey);

  const put = (key: string) =>
    fleet.exec(
      'alpha',
      `curl -sS -o /dev/null -w '%{http_code}' -X PUT -H "Authorization: Convex $KEY" -d '{"hello":"fleet"}' http://127.0.0.1:3210/api/documents/fleet-check`,
      { env: { KEY: key } },
    );
  assert.equal((await put(otherKey)).stdout, '401');
  assert.equal((await put(goodKey)).stdout, '200', 'the key made with the instance secret works');
  const read = await fleet.exec('alpha', `curl -fsS -H "Authorization: Convex $KEY" http://127.0.0.1:3210/api/documents/fleet-check`, {
    env: { KEY: goodKey },
  });
  assert.deepEqual(JSON.parse(read.stdout), { hello: 'fleet' });
});

test('teardown leaves no container, volume or network of the fleet', async () => {
  await fleet.down();
  const label = `label=convex-ops.fleet=${fleet.name}`;
  assert.equal((await docker(['ps', '--all', '--quiet', '--filter', label])).stdout.trim(), '');
  assert.equal((await docker(['volume', 'ls', '--quiet', '--filter', label])).stdout.trim(), '');
  assert.equal((await docker(['network', 'ls', '--quiet', '--filter', label])).stdout.trim(), '');
  const byName = await docker(['ps', '--all', '--format', '{{.Names}}', '--filter', `name=cxo-${fleet.name}-`]);
  assert.equal(byName.stdout.trim(), '');
  const network = await docker(['network', 'ls', '--format', '{{.Name}}', '--filter', `name=cxo-${fleet.name}`]);
  assert.equal(network.stdout.split('\n').filter((name) => name === `cxo-${fleet.name}`).length, 0);
});
