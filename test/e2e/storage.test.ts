// [storage] mode = "s3" end to end (issue 19) against s3rver, an S3 server from npm that speaks
// the S3 REST API (a fake: it accepts any SigV4 signature from its known access key id, S3RVER),
// run by this test on the fleet network's gateway. A partial configuration is refused before
// connecting; a missing bucket stops the run before compose; a file uploaded through the stand-in
// lands in the files bucket and survives a restart of the backend; a switch from local to S3 on
// an instance with data is refused with the export/import procedure, and so is S3 → local;
// doctor names an unreachable endpoint from the backend's log.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer } from 'node:net';
import S3rver from 's3rver';
import { fleetHooks } from '../fleet/index.ts';
import { docker } from '../fleet/proc.ts';
import { adminKeyOf, backendUrl, parseRunJson, putDocument } from './convex-api.ts';

const getFleet = fleetHooks({ name: 'storage', droplets: [{ name: 'bucketed', user: 'root' }, { name: 'switcher', user: 'root' }] });
const fleet = new Proxy({} as ReturnType<typeof getFleet>, { get: (_target, key) => Reflect.get(getFleet(), key) });
const sh = async (droplet: string, cmd: string) => (await fleet.exec(droplet, cmd)).stdout.trim();

const BUCKETS = { exports_bucket: 'cx-exports', snapshot_imports_bucket: 'cx-imports', modules_bucket: 'cx-modules', files_bucket: 'cx-files', search_bucket: 'cx-search' };
const SECRET_KEY = 's3-secret-e2e-5b1f0c9a7d';
const credentials = { STORAGE_E2E_ACCESS: 'S3RVER', STORAGE_E2E_SECRET: SECRET_KEY };

const s3Directory = mkdtempSync(join(tmpdir(), 's3rver-'));
async function freePort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>(resolve => probe.listen(0, '0.0.0.0', resolve));
  const port = (probe.address() as { port: number }).port;
  await new Promise(resolve => probe.close(resolve));
  return port;
}

let server: S3rver | undefined;
let port = 0;

before(async () => {
  port = await freePort();
  server = new S3rver({ address: '0.0.0.0', port, silent: true, directory: s3Directory, configureBuckets: Object.values(BUCKETS).map(name => ({ name, configs: [] })) });
  await server.run();
});

let endpoint = '';
/** s3rver as the droplets, and the containers on them, reach it: at the fleet network's gateway. */
async function s3Endpoint(): Promise<string> {
  if (!endpoint) {
    const gateway = (await docker(['network', 'inspect', '--format', '{{(index .IPAM.Config 0).Gateway}}', fleet.network])).stdout.trim();
    endpoint = `http://${gateway}:${port}`;
  }
  return endpoint;
}

after(async () => {
  await server?.close();
  server = undefined;
  rmSync(s3Directory, { recursive: true, force: true });
});

const s3Storage = async (overrides: Record<string, unknown> = {}) => ({
  mode: 's3', endpoint: await s3Endpoint(), region: 'us-east-1', force_path_style: true, ...BUCKETS, access_key_env: 'STORAGE_E2E_ACCESS', secret_key_env: 'STORAGE_E2E_SECRET', ...overrides,
});
const inventoryFor = (droplet: string, name: string, storage: Record<string, unknown>) => fleet.writeInventory(name, { hosts: { [droplet]: { storage } } });

/** The names in a folder of s3rver's (one "<key>._S3rver_object" per object of a bucket). */
const readdirNames = (path: string) => readdirSync(path);

async function upload(droplet: string, body: string): Promise<string> {
  const response = await fetch(`${backendUrl(fleet, droplet)}/api/storage/upload`, { method: 'POST', headers: { Authorization: `Convex ${await adminKeyOf(fleet, droplet)}` }, body });
  assert.equal(response.status, 200, await response.clone().text());
  return ((await response.json()) as { storageId: string }).storageId;
}

async function download(droplet: string, id: string): Promise<{ status: number; text: string }> {
  const response = await fetch(`${backendUrl(fleet, droplet)}/api/storage/${id}`);
  return { status: response.status, text: await response.text() };
}

const seen = (run: { stdout: string; stderr: string }) => run.stdout + run.stderr + readFileSync(join(fleet.dir, '.convex-ops', 'convex-ops.log'), 'utf8');

test('a partial S3 configuration is refused before connecting, naming the missing keys', async () => {
  const partial = { mode: 's3', endpoint: await s3Endpoint(), region: 'us-east-1', files_bucket: 'cx-files', access_key_env: 'STORAGE_E2E_ACCESS', secret_key_env: 'STORAGE_E2E_SECRET' };
  const run = await fleet.runScript('install.ts', ['--host', 'bucketed', '--inventory', await inventoryFor('bucketed', 'partial', partial)], credentials);
  assert.equal(run.code, 1, run.stdout + run.stderr);
  assert.match(run.stderr, /hosts\.bucketed\.storage: mode = "s3" needs exports_bucket, snapshot_imports_bucket, modules_bucket, search_bucket as well \(missing\)/);
  assert.doesNotMatch(run.stdout + run.stderr, /connect/);
});

test('a missing bucket stops the run before the backend is started with it', async () => {
  const inventory = await inventoryFor('bucketed', 'no-bucket', await s3Storage({ search_bucket: 'cx-nowhere' }));
  const run = await fleet.runScript('install.ts', ['--host', 'bucketed', '--inventory', inventory], credentials);
  assert.equal(run.code, 1, run.stdout + run.stderr);
  assert.match(run.stdout + run.stderr, /storage\s+failed.*\n(.*\n)*.*bucket cx-nowhere does not exist\. Create it/);
  assert.equal(await sh('bucketed', 'test -e /opt/convex/docker-compose.yml && echo present || echo absent'), 'absent', 'compose ran');
  assert.ok(!seen(run).includes(SECRET_KEY), 'the secret key leaked');
});

test('S3 storage end to end: a file uploaded through the backend is in the bucket and survives a restart', async () => {
  const inventory = await inventoryFor('bucketed', 's3', await s3Storage());
  const dry = await fleet.runScript('install.ts', ['--host', 'bucketed', '--inventory', inventory, '--check'], credentials);
  assert.equal(dry.code, 2, dry.stdout + dry.stderr);
  assert.match(dry.stdout, /storage\s+ok/);
  const run = await fleet.runScript('install.ts', ['--host', 'bucketed', '--inventory', inventory], credentials);
  assert.equal(run.code, 0, run.stdout + run.stderr);
  assert.match(run.stdout, /storage\s+ok.*5 buckets exist at http:\/\/.*put and delete work/);
  assert.ok(!seen(run).includes(SECRET_KEY), 'the secret key leaked');
  assert.ok(!(await sh('bucketed', 'cat /opt/convex/docker-compose.yml')).includes(SECRET_KEY));
  assert.match(await sh('bucketed', 'docker logs convex-backend 2>&1'), /File storage: S3 storage in bucket cx-files/);

  const id = await upload('bucketed', 'hello from S3');
  assert.ok(readdirNames(join(s3Directory, 'cx-files')).includes(`${id}._S3rver_object`), 'the file is not in the bucket');
  assert.equal(readFileSync(join(s3Directory, 'cx-files', `${id}._S3rver_object`), 'utf8'), 'hello from S3');
  assert.equal(await sh('bucketed', `find /mnt/convex_bucketed/data/storage -name ${id} | wc -l`), '0', 'the file was kept on the droplet');
  assert.deepEqual(readdirNames(join(s3Directory, 'cx-files')).filter(name => name.startsWith('convex-ops-probe')), [], 'the probe object was left behind');

  await sh('bucketed', `docker restart convex-backend >/dev/null && for i in $(seq 90); do [ "$(docker inspect -f '{{.State.Health.Status}}' convex-backend)" = healthy ] && break; sleep 1; done`);
  assert.deepEqual(await download('bucketed', id), { status: 200, text: 'hello from S3' });

  const again = await fleet.runScript('install.ts', ['--host', 'bucketed', '--inventory', inventory, '--json'], credentials);
  assert.equal(again.code, 0, again.stdout + again.stderr);
  assert.equal(parseRunJson(again.stdout).hosts[0]!.recap.changed, 0);
});

test('a switch from local to S3 on an instance with data is refused with the export/import procedure', async () => {
  const local = await fleet.runScript('install.ts', ['--host', 'switcher']);
  assert.equal(local.code, 0, local.stdout + local.stderr);
  assert.equal(await putDocument(backendUrl(fleet, 'switcher'), await adminKeyOf(fleet, 'switcher'), 'kept', { on: 'local' }), 200);
  const filesBefore = await sh('switcher', 'sha256sum /opt/convex/docker-compose.yml /opt/convex/.env');
  const run = await fleet.runScript('install.ts', ['--host', 'switcher', '--inventory', await inventoryFor('switcher', 'switch', await s3Storage())], credentials);
  assert.equal(run.code, 1, run.stdout + run.stderr);
  const out = run.stdout + run.stderr;
  assert.match(out, /this instance keeps its files in local storage \(\/mnt\/convex_switcher\/data\/storage is not empty\)/);
  assert.match(out, /npx convex export --include-file-storage --path backup\.zip/);
  assert.match(out, /npx convex import --replace-all backup\.zip/);
  assert.equal(await sh('switcher', 'sha256sum /opt/convex/docker-compose.yml /opt/convex/.env'), filesBefore, 'the compose file or .env changed');
  assert.doesNotMatch(await sh('switcher', 'cat /opt/convex/docker-compose.yml'), /S3_STORAGE/);
});

test('doctor names an unreachable S3 endpoint from what the backend logs', async () => {
  await server?.close();
  server = undefined;
  const response = await fetch(`${backendUrl(fleet, 'bucketed')}/api/storage/upload`, { method: 'POST', headers: { Authorization: `Convex ${await adminKeyOf(fleet, 'bucketed')}` }, body: 'nowhere to go' });
  assert.equal(response.status, 500, await response.text());
  const run = await fleet.runScript('doctor.ts', ['--host', 'bucketed', '--inventory', await inventoryFor('bucketed', 's3', await s3Storage())], credentials);
  assert.equal(run.code, 1, run.stdout + run.stderr);
  assert.match(run.stdout + run.stderr, new RegExp(`the backend cannot reach ${(await s3Endpoint()).replace(/[.]/g, '\\.')}; the backend logs .*Connection refused`));
  assert.match(run.stdout + run.stderr, /fix hosts\.bucketed\.storage\.endpoint/);
  assert.ok(!seen(run).includes(SECRET_KEY), 'the secret key leaked');
});

test('a switch from S3 back to local storage on the same instance is refused, naming the way through', async () => {
  const filesBefore = await sh('bucketed', 'sha256sum /opt/convex/docker-compose.yml /opt/convex/.env');
  const run = await fleet.runScript('install.ts', ['--host', 'bucketed']);
  assert.equal(run.code, 1, run.stdout + run.stderr);
  assert.match(run.stdout + run.stderr, /secret\s+failed.*\n(.*\n)*.*this instance keeps its files in S3, and switching it to local storage would leave them in the buckets/);
  assert.match(run.stdout + run.stderr, /set hosts\.bucketed\.instance_name to a new name/);
  assert.equal(await sh('bucketed', 'sha256sum /opt/convex/docker-compose.yml /opt/convex/.env'), filesBefore, 'the compose file or .env changed');
});
