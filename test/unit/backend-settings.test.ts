// [backend_env] and [dashboard_env]: names and values checked at load (before anything connects),
// plain values into the compose file, secret ones into .env only, masked in every diff.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadInventory } from '../../scripts/lib/inventory.ts';
import type { Host } from '../../scripts/lib/inventory.ts';
import { secretValues } from '../../scripts/lib/backend-settings.ts';
import { renderCompose } from '../../scripts/lib/steps/compose.ts';
import { envFile, parseEnv, planSecret } from '../../scripts/lib/steps/secret.ts';
import type { SecretFacts } from '../../scripts/lib/steps/secret.ts';
import { composeInputsHash } from '../../scripts/lib/steps/up.ts';
import { redact } from '../../scripts/lib/redact.ts';
import { yaml } from '../../scripts/lib/yaml.ts';
import { absent, file, testHost } from './fixtures.ts';

const dir = mkdtempSync(join(tmpdir(), 'settings-'));
let n = 0;
function load(tables: string, allowUnknownEnv = false) {
  const path = join(dir, `inv${n++}.toml`);
  writeFileSync(path, `[defaults]\nbackend_image = "r/b:1"\ndashboard_image = "r/d:1"\n[defaults.backend_env]\nRUST_LOG = "info"\nDOCUMENT_RETENTION_DELAY = 86400\n\n[hosts.dev]\naddress = "10.0.0.1"\nvolume = "/mnt/dev"\n${tables}`);
  return loadInventory(path, { allowUnknownEnv }).hosts.get('dev')!;
}
function refused(tables: string, pattern: RegExp) {
  assert.throws(() => load(tables), (e: Error) => pattern.test(e.message) || assert.fail(`message was: ${e.message}`));
}

test('settings: strings, numbers and secret references load, merged over [defaults] name by name', () => {
  const dev = load('[hosts.dev.backend_env]\nRUST_LOG = "debug"\nAPPLICATION_MAX_CONCURRENT_QUERIES = 32\n[hosts.dev.dashboard_env]\nNEXT_PUBLIC_ADMIN_KEY = { env = "DASH_KEY" }\n');
  assert.deepEqual(dev.backend_env, { RUST_LOG: { value: 'debug' }, DOCUMENT_RETENTION_DELAY: { value: '86400' }, APPLICATION_MAX_CONCURRENT_QUERIES: { value: '32' } });
  assert.deepEqual(dev.dashboard_env, { NEXT_PUBLIC_ADMIN_KEY: { env: 'DASH_KEY' } });
});

test('settings: an unknown name is refused with the closest known one, unless --allow-unknown-env', () => {
  refused('[hosts.dev.backend_env]\nAPPLICATION_MAX_CONCURENT_QUERIES = 32\n', /hosts\.dev\.backend_env\.APPLICATION_MAX_CONCURENT_QUERIES: APPLICATION_MAX_CONCURENT_QUERIES is not a variable the backend image is known to read\. Did you mean APPLICATION_MAX_CONCURRENT_QUERIES\? To set it anyway, pass --allow-unknown-env\./);
  refused('[hosts.dev.backend_env]\nSOMETHING_ELSE_ENTIRELY = "1"\n', /is not a variable the backend image is known to read\. Known names: APPLICATION_MAX_CONCURRENT_QUERIES, /);
  assert.deepEqual(load('[hosts.dev.backend_env]\nMY_FEATURE_FLAG = "1"\n', true).backend_env?.MY_FEATURE_FLAG, { value: '1' });
  refused('[hosts.dev.backend_env]\nNEXT_PUBLIC_ADMIN_KEY = { env = "K" }\n', /read by the dashboard, not the backend\. Move it to \[dashboard_env\]/);
});

test('settings: a renamed name names its replacements; a name convex-ops owns names the inventory key to use', () => {
  refused('[hosts.dev.backend_env]\nACTIONS_USER_TIMEOUT_SECS = 60\n', /ACTIONS_USER_TIMEOUT_SECS no longer exists: it was replaced by V8_ACTION_USER_TIMEOUT_SECS and NODE_ACTION_USER_TIMEOUT_SECS/);
  refused('[hosts.dev.backend_env]\nINSTANCE_NAME = "x"\n', /INSTANCE_NAME is set by convex-ops itself and cannot be overridden here\. Use instance_name instead\./);
  refused('[hosts.dev.backend_env]\nPOSTGRES_URL = "x"\n', /Use \[postgres\] url/);
  refused('[hosts.dev.backend_env]\nCONVEX_CLOUD_ORIGIN = "x"\n', /Use \[domains\] api/);
  refused('[hosts.dev.backend_env]\nDO_NOT_REQUIRE_SSL = "true"\n', /Use \[postgres\] mode/);
  refused('[hosts.dev.dashboard_env]\nNEXT_PUBLIC_DEPLOYMENT_URL = "x"\n', /Use \[domains\] api/);
  // Owned names stay refused even when unknown names are allowed.
  assert.throws(() => load('[hosts.dev.backend_env]\nPG_CA_FILE = "/x"\n', true), /Use \[postgres\] ca_file/);
});

test('settings: values are checked against what the image reads', () => {
  refused('[hosts.dev.backend_env]\nDISABLE_BEACON = true\n', /must be a string, a number, or a secret given as \{ env = "NAME" \}.*Write it as a string, e\.g\. "true"/);
  refused('[hosts.dev.backend_env]\nAPPLICATION_MAX_CONCURRENT_QUERIES = "many"\n', /"many" must be a whole number/);
  refused('[hosts.dev.backend_env]\nLOG_FORMAT = "xml"\n', /must be "json", "compact" or "pretty"/);
  refused('[hosts.dev.backend_env]\nRUST_LOG = { env = "A", other = 1 }\n', /must be a string, a number, or a secret/);
  refused('[hosts.dev.dashboard_env]\nNEXT_PUBLIC_ADMIN_KEY = "plain"\n', /is a secret; give it as \{ env = "NAME" \}/);
  refused('[hosts.dev.backend_env]\n"BAD-NAME" = "1"\n', /is not an environment variable name/);
});

test('settings: a secret is read from the environment; a missing or unwritable one is named, never shown', () => {
  const settings = { RUST_LOG: { env: 'LOG_SECRET' }, DISABLE_BEACON: { value: 'true' } };
  assert.deepEqual([...secretValues(settings, 'hosts.dev.backend_env', { LOG_SECRET: 'abc' }).values], [['RUST_LOG', 'abc']]);
  assert.deepEqual(secretValues(settings, 'hosts.dev.backend_env', {}).problems, ['hosts.dev.backend_env.RUST_LOG: the environment variable LOG_SECRET is not set. Export it with the value, then run again.']);
  const bad = secretValues(settings, 'at', { LOG_SECRET: 'has$dollar' }).problems;
  assert.match(bad[0]!, /may hold only printable characters/);
  assert.doesNotMatch(bad[0]!, /has\$dollar/);
});

const SECRET_VALUE = 'sk-test-0123456789abcdef';
const settingsHost: Host = {
  ...testHost,
  // NEXT_TOKEN as --allow-unknown-env lets through.
  backend_env: { RUST_LOG: { value: 'info,x=$y' }, DOCUMENT_RETENTION_DELAY: { value: '3600' }, NEXT_TOKEN: { env: 'SETTINGS_TEST_SECRET' } },
  dashboard_env: { NEXT_PUBLIC_ADMIN_KEY: { env: 'SETTINGS_TEST_SECRET' } },
};
process.env.SETTINGS_TEST_SECRET = SECRET_VALUE;

test('compose: plain settings are in the environment, "$" kept literal; a secret is only a ${…} reference', () => {
  const text = renderCompose(settingsHost);
  const doc = yaml().parse(text) as { services: Record<string, { environment: Record<string, string> }> };
  const backend = doc.services.backend!.environment;
  assert.equal(backend.RUST_LOG, 'info,x=$$y', 'overrides the template default; "$" doubled, which compose reads as one');
  assert.equal(backend.DOCUMENT_RETENTION_DELAY, '3600');
  assert.equal(backend.NEXT_TOKEN, '${BACKEND_ENV_NEXT_TOKEN}');
  assert.equal(backend.INSTANCE_NAME, 'swarm-dev');
  assert.equal(doc.services.dashboard!.environment.NEXT_PUBLIC_ADMIN_KEY, '${DASHBOARD_ENV_NEXT_PUBLIC_ADMIN_KEY}');
  assert.doesNotMatch(text, new RegExp(SECRET_VALUE));
  // docker-compose v1 reads YAML 1.1, where a bare on/yes/no is a boolean it refuses.
  const flags = renderCompose({ ...testHost, backend_env: { A: { value: 'on' }, B: { value: 'no' } } });
  assert.match(flags, /^ {6}A: "on"$/m);
  assert.match(flags, /^ {6}B: "no"$/m);
});

const fresh: SecretFacts = { env: absent, credentials: undefined, compose: absent, containers: new Map(), localFiles: false };
const generate = { secret: () => 'a1'.repeat(32), password: () => 'P4ssw0rdFromTheGenerator0123456789abcdef' };

test('.env: secret settings are written under keys of their own, masked in the diff; a second plan changes nothing', () => {
  const [create] = planSecret(fresh, settingsHost, generate);
  const values = parseEnv(create!.stdin!);
  assert.equal(values.get('BACKEND_ENV_NEXT_TOKEN'), SECRET_VALUE);
  assert.equal(values.get('DASHBOARD_ENV_NEXT_PUBLIC_ADMIN_KEY'), SECRET_VALUE);
  assert.equal(values.has('BACKEND_ENV_RUST_LOG'), false, 'plain settings stay in the compose file');
  assert.match(create!.diff!, /^\+BACKEND_ENV_NEXT_TOKEN=\*{8}$/m);
  assert.doesNotMatch(create!.diff!, new RegExp(SECRET_VALUE));
  assert.equal(redact(`token ${SECRET_VALUE} leaked`), 'token ******** leaked', 'registered for redaction');
  assert.deepEqual(planSecret({ ...fresh, env: file(create!.stdin!, '600') }, settingsHost, generate), []);
});

test('.env: a secret setting taken out of the inventory leaves .env; a changed one changes what compose starts', () => {
  const env = file(planSecret(fresh, settingsHost, generate)[0]!.stdin!, '600');
  const without: Host = { ...settingsHost, dashboard_env: {} };
  const [update] = planSecret({ ...fresh, env }, without, generate);
  assert.equal(update!.label, 'update .env');
  assert.equal(parseEnv(update!.stdin!).has('DASHBOARD_ENV_NEXT_PUBLIC_ADMIN_KEY'), false);
  assert.match(update!.diff!, /^-DASHBOARD_ENV_NEXT_PUBLIC_ADMIN_KEY=\*{8}$/m);
  const compose = renderCompose(settingsHost);
  const changed = envFile(settingsHost, new Map([...parseEnv(env.kind === 'file' ? env.content : ''), ['BACKEND_ENV_NEXT_TOKEN', 'another-value-0123']])).content;
  assert.notEqual(composeInputsHash(compose, changed), composeInputsHash(compose, env.kind === 'file' ? env.content : ''));
});
