// [storage]: a whole S3 configuration or none (checked at load), its variables in the compose
// file with the credentials only in .env, the local → S3 switch guard, and the bucket probe's
// findings, as facts in and plans or messages out.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadInventory } from '../../scripts/lib/inventory.ts';
import type { Host } from '../../scripts/lib/inventory.ts';
import type { S3Storage } from '../../scripts/lib/storage.ts';
import { deployedStorage, storageCredentials, storageSwitchRefusal } from '../../scripts/lib/storage.ts';
import { renderCompose } from '../../scripts/lib/steps/compose.ts';
import { planSecret, parseEnv } from '../../scripts/lib/steps/secret.ts';
import { bucketProbeFact, bucketUrl, probeProblem, storage } from '../../scripts/lib/steps/storage.ts';
import { installSteps } from '../../scripts/lib/runbooks.ts';
import { yaml } from '../../scripts/lib/yaml.ts';
import { absent, file, testHost } from './fixtures.ts';

const dir = mkdtempSync(join(tmpdir(), 'storage-'));
let n = 0;
const WHOLE = 'mode = "s3"\nendpoint = "http://10.0.0.9:4568"\nregion = "us-east-1"\nforce_path_style = true\nexports_bucket = "c-exports"\nsnapshot_imports_bucket = "c-imports"\nmodules_bucket = "c-modules"\nfiles_bucket = "c-files"\nsearch_bucket = "c-search"\naccess_key_env = "S3_AK"\nsecret_key_env = "S3_SK"\n';
function load(storageTable: string) {
  const path = join(dir, `inv${n++}.toml`);
  writeFileSync(path, `[hosts.dev]\naddress = "10.0.0.1"\nvolume = "/mnt/dev"\nbackend_image = "r/b:1"\ndashboard_image = "r/d:1"\n[hosts.dev.storage]\n${storageTable}`);
  return loadInventory(path).hosts.get('dev')!;
}
const refused = (table: string, pattern: RegExp) => assert.throws(() => load(table), (e: Error) => pattern.test(e.message) || assert.fail(`message was: ${e.message}`));

test('storage: a whole S3 table loads; a partial one is refused naming every missing key', () => {
  const dev = load(WHOLE);
  assert.deepEqual(dev.storage, {
    mode: 's3', endpoint: 'http://10.0.0.9:4568', region: 'us-east-1', force_path_style: true,
    buckets: { exports_bucket: 'c-exports', snapshot_imports_bucket: 'c-imports', modules_bucket: 'c-modules', files_bucket: 'c-files', search_bucket: 'c-search' },
    access_key_env: 'S3_AK', secret_key_env: 'S3_SK',
  });
  refused(WHOLE.replace(/^search_bucket.*\n/m, '').replace(/^region.*\n/m, ''), /hosts\.dev\.storage: mode = "s3" needs region, search_bucket as well \(missing\)\. With only some of its S3 variables the backend silently keeps files on the droplet/);
  refused(WHOLE.replace('mode = "s3"', 'mode = "local"'), /hosts\.dev\.storage: endpoint, region, .* take effect only with mode = "s3"/);
  refused(WHOLE.replace('mode = "s3"', 'mode = "gcs"'), /storage\.mode: "gcs" is not a mode/);
  refused(WHOLE.replace('"c-files"', '"Files_Bucket"'), /storage\.files_bucket: "Files_Bucket" is not a bucket name/);
  refused(WHOLE.replace('"http://10.0.0.9:4568"', '"http://user:pw@10.0.0.9/x"'), /storage\.endpoint: .* must be an http:\/\/ or https:\/\/ URL with no path, user or password/);
  refused(WHOLE.replace('force_path_style = true', 'force_path_style = "yes"'), /storage\.force_path_style: must be a non-empty boolean/);
  assert.equal(load('mode = "local"\n').storage?.mode, 'local');
});

test('storage: its variables are refused in [backend_env], naming [storage]', () => {
  const path = join(dir, 'env.toml');
  writeFileSync(path, '[hosts.dev]\naddress = "10.0.0.1"\nvolume = "/mnt/dev"\nbackend_image = "r/b:1"\ndashboard_image = "r/d:1"\n[hosts.dev.backend_env]\nS3_STORAGE_FILES_BUCKET = "x"\n');
  assert.throws(() => loadInventory(path), /S3_STORAGE_FILES_BUCKET is set by convex-ops itself and cannot be overridden here\. Use \[storage\]/);
});

const s3: S3Storage = {
  mode: 's3', endpoint: 'http://10.0.0.9:4568', region: 'us-east-1', force_path_style: true,
  buckets: { exports_bucket: 'c-exports', snapshot_imports_bucket: 'c-imports', modules_bucket: 'c-modules', files_bucket: 'c-files', search_bucket: 'c-search' },
  access_key_env: 'STORAGE_TEST_AK', secret_key_env: 'STORAGE_TEST_SK',
};
const s3Host: Host = { ...testHost, storage: s3 };
const ACCESS = 'AKIASTORAGETEST0001';
const SECRET = 'storage-secret-key-0123456789';
process.env.STORAGE_TEST_AK = ACCESS;
process.env.STORAGE_TEST_SK = SECRET;

test('compose: all six S3 variables and the options; the credentials only as references to .env', () => {
  const text = renderCompose(s3Host);
  const env = (yaml().parse(text) as { services: { backend: { environment: Record<string, string> } } }).services.backend.environment;
  assert.equal(env.AWS_REGION, 'us-east-1');
  assert.equal(env.S3_STORAGE_FILES_BUCKET, 'c-files');
  assert.equal(env.S3_STORAGE_SNAPSHOT_IMPORTS_BUCKET, 'c-imports');
  assert.equal(env.S3_ENDPOINT_URL, 'http://10.0.0.9:4568');
  assert.equal(env.AWS_S3_FORCE_PATH_STYLE, 'true');
  assert.equal(env.AWS_ACCESS_KEY_ID, '${STORAGE_AWS_ACCESS_KEY_ID}');
  assert.equal(env.AWS_SECRET_ACCESS_KEY, '${STORAGE_AWS_SECRET_ACCESS_KEY}');
  assert.ok(!text.includes(ACCESS) && !text.includes(SECRET));
  assert.doesNotMatch(renderCompose(testHost), /S3_|AWS_/, 'local storage sets none of them');
});

test('.env: the credentials are written masked; missing ones are named before connecting', () => {
  const [create] = planSecret(fresh, s3Host, generate);
  const values = parseEnv(create!.stdin!);
  assert.equal(values.get('STORAGE_AWS_ACCESS_KEY_ID'), ACCESS);
  assert.equal(values.get('STORAGE_AWS_SECRET_ACCESS_KEY'), SECRET);
  assert.match(create!.diff!, /^\+STORAGE_AWS_SECRET_ACCESS_KEY=\*{8}$/m);
  assert.ok(!create!.diff!.includes(SECRET));
  assert.deepEqual(storageCredentials(s3, 'hosts.dev.storage', {}).problems, [
    'hosts.dev.storage.access_key_env: the environment variable STORAGE_TEST_AK is not set. Export it with the value, then run again.',
    'hosts.dev.storage.secret_key_env: the environment variable STORAGE_TEST_SK is not set. Export it with the value, then run again.',
  ]);
});

test('runbook: the storage step runs in S3 mode only, after .env and before the compose file', () => {
  const run = { args: { _: [] }, local: () => '/tmp' };
  assert.deepEqual(installSteps(s3Host, run).map(step => step.name), ['directories', 'docker', 'secret', 'postgres', 'storage', 'compose', 'up', 'admin-key']);
  assert.ok(!installSteps(testHost, run).some(step => step.name === 'storage'));
});

const composeOf = (host: Host) => file(renderCompose(host));
const fresh = { env: absent, credentials: undefined, compose: absent, containers: new Map(), localFiles: false };
const generate = { secret: () => 'a'.repeat(64), password: () => 'p'.repeat(40) };

test('switch: local → S3 on an instance with local files is refused with the export/import procedure, before .env is written', () => {
  assert.deepEqual(deployedStorage(composeOf(testHost)), { mode: 'local', instance: 'swarm-dev' });
  assert.deepEqual(deployedStorage(composeOf(s3Host)), { mode: 's3', instance: 'swarm-dev' });
  assert.throws(
    () => planSecret({ ...fresh, compose: composeOf(testHost), localFiles: true }, s3Host, generate),
    /local storage \(\/mnt\/v\/data\/storage is not empty\)[\s\S]*npx convex export --include-file-storage[\s\S]*npx convex import --replace-all[\s\S]*Nothing was changed/,
  );
  assert.equal(storageSwitchRefusal(s3Host, composeOf(testHost), false), undefined, 'an empty instance switches');
  assert.equal(storageSwitchRefusal(s3Host, composeOf(s3Host), true), undefined, 'already on S3');
  assert.equal(storageSwitchRefusal(s3Host, absent, false), undefined, 'a fresh host');
});

test('switch: S3 → local is refused unless it is a new instance (a new instance_name, an empty database)', () => {
  assert.throws(
    () => planSecret({ ...fresh, compose: composeOf(s3Host), localFiles: false }, testHost, generate),
    /keeps its files in S3[\s\S]*set hosts\.dev\.instance_name to a new name[\s\S]*To stay on S3/,
  );
  assert.equal(storageSwitchRefusal({ ...testHost, instance_name: 'swarm-dev-local' }, composeOf(s3Host), false), undefined);
  assert.equal(storageSwitchRefusal(testHost, composeOf(testHost), true), undefined, 'local stays local');
});

test('probe: path-style and virtual-hosted URLs; no credential on the command line', () => {
  assert.equal(bucketUrl(s3, 'c-files'), 'http://10.0.0.9:4568/c-files/');
  assert.equal(bucketUrl({ ...s3, force_path_style: false }, 'c-files'), 'http://c-files.10.0.0.9:4568/');
  assert.equal(bucketUrl({ ...s3, endpoint: undefined, force_path_style: false }, 'c-files'), 'https://c-files.s3.us-east-1.amazonaws.com/');
  const command = bucketProbeFact(s3Host, s3).command;
  assert.ok(!command.includes(ACCESS) && !command.includes(SECRET));
  assert.match(command, /curl .* -K - --aws-sigv4 aws:amz:us-east-1:s3/);
});

test('probe: each failure is named with its cause and fix, and stops the run before compose', () => {
  const parse = bucketProbeFact(s3Host, s3).parse;
  const probes = parse('c-exports ok 200\nc-imports exists 404 \nc-modules put 403 AccessDenied\nc-files exists 000 Failed to connect to 10.0.0.9 port 4568: Connection refused\nc-search exists 000 SSL certificate problem: unable to get local issuer certificate\n', 0);
  const messages = probes.filter(p => p.stage !== 'ok').map(p => probeProblem(s3Host, p));
  assert.match(messages[0]!, /bucket c-imports does not exist\. Create it/);
  assert.match(messages[1]!, /bucket c-modules: access denied for the put \(AccessDenied\)\. Check the credentials in STORAGE_TEST_AK and STORAGE_TEST_SK/);
  assert.match(messages[2]!, /bucket c-files: the endpoint cannot be reached \(Failed to connect .*Connection refused\)\. Check hosts\.dev\.storage\.endpoint\.$/);
  assert.match(messages[3]!, /certificate must be trusted by the droplet/);
  const check = storage.phases![0]!;
  assert.throws(() => check.plan({ buckets: probes }, s3Host), /the S3 buckets are not ready, so the backend is not started with them:\n {2}- bucket c-imports does not exist/);
  assert.deepEqual(check.plan({ buckets: parse('c-exports ok 200\nc-files ok 200\n', 0) }, s3Host), []);
  // A dry run on a fresh host: the secret step has not written the credentials; nothing to prove yet.
  assert.deepEqual(check.plan({ buckets: parse('c-exports credentials 0\nc-files credentials 0\n', 0) }, s3Host), []);
});
