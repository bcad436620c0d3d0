// The admin-key step as data: the host's .env and the operator's .secrets/<host>.env in, the key's
// generation and the local write out; and the generating script itself, run with sh against a
// stand-in docker, on a .env in a temporary folder.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Host } from '../../scripts/lib/inventory.ts';
import { HostMemo } from '../../scripts/lib/step.ts';
import { cliSettings, planAdminKey } from '../../scripts/lib/steps/admin-key.ts';
import { envFile, parseEnv } from '../../scripts/lib/steps/secret.ts';
import { absent, file, testHost } from './fixtures.ts';
import { runWithFakes, syntaxErrors } from './fake-commands.ts';

const labels = (changes: Array<{ label: string }>) => changes.map(c => c.label);

const KEY = 'swarm-dev|0123456789abcdef';
const envWith = (values: Record<string, string>, host: Host = testHost) => file(envFile(host, new Map(Object.entries(values))).content, '600');
const BASE = { COMPOSE_PROJECT_NAME: 'convex', INSTANCE_SECRET: 'c'.repeat(64) };

function localFile(content?: string): { path: string; content?: string } {
  const path = join(mkdtempSync(join(tmpdir(), 'convex-ops-secrets-')), '.secrets', 'dev.env');
  return content === undefined ? { path } : { path, content };
}

test('admin-key: a key in .env and the same in .secrets/<host>.env: nothing to do', () => {
  assert.deepEqual(planAdminKey({ env: envWith({ ...BASE, CONVEX_ADMIN_KEY: KEY }) }, testHost, localFile(cliSettings(testHost, KEY))), []);
});

test('admin-key: a key in .env but not (or another) on this machine: only the local file is written', () => {
  const local = localFile(cliSettings(testHost, 'swarm-dev|ffff'));
  const changes = planAdminKey({ env: envWith({ ...BASE, CONVEX_ADMIN_KEY: KEY }) }, testHost, local);
  assert.deepEqual(labels(changes), [`write ${local.path}`]);
  assert.equal(changes[0]!.script, undefined, 'local work only');
  changes[0]!.after!('', new HostMemo());
  assert.equal(readFileSync(local.path, 'utf8'), cliSettings(testHost, KEY));
  assert.equal(statSync(local.path).mode & 0o777, 0o600);
});

test('admin-key: no key (or another instance\'s): generated on the host, then written here from what the host printed', () => {
  for (const env of [absent, envWith(BASE), envWith({ ...BASE, CONVEX_ADMIN_KEY: 'other-instance|abcd' })]) {
    const local = localFile();
    const changes = planAdminKey({ env }, testHost, local);
    assert.deepEqual(labels(changes), ['generate the admin key with generate_admin_key.sh', `write ${local.path}`]);
    const [generate, write] = changes;
    assert.doesNotMatch(generate!.diff!, /abcd/, 'the diff masks the values');
    const memo = new HostMemo();
    generate!.after!(`some banner\n  ${KEY}  \n`, memo);
    write!.after!('', memo);
    assert.match(readFileSync(local.path, 'utf8'), /^CONVEX_SELF_HOSTED_ADMIN_KEY='swarm-dev\|0123456789abcdef'$/m);
  }
});

test('admin-key: a key of this instance in another form is refused, and so is output without a key', () => {
  assert.throws(
    () => planAdminKey({ env: envWith({ ...BASE, CONVEX_ADMIN_KEY: "swarm-dev|12'; rm -rf ~" }) }, testHost, localFile()),
    /CONVEX_ADMIN_KEY in \/opt\/convex\/\.env is not of the form swarm-dev\|<hex>, so it is not written to this machine\. Remove that line/,
  );
  const [generate] = planAdminKey({ env: envWith(BASE) }, testHost, localFile());
  assert.throws(() => generate!.after!('other-instance|abcd\nswarm-dev|xyz\n', new HostMemo()), /generate_admin_key\.sh printed no key of the form swarm-dev\|<hex>/);
});

// ------------------------------------------------------------------ the remote script, run here

function generateOn(env: string | undefined, printed: string) {
  const root = mkdtempSync(join(tmpdir(), 'convex-ops-root-'));
  const host: Host = { ...testHost, root };
  if (env !== undefined) writeFileSync(join(root, '.env'), env, { mode: 0o600 });
  const facts = { env: env === undefined ? absent : file(env, '600') };
  const [generate] = planAdminKey(facts, host, localFile());
  const docker = `[ "$*" = 'exec convex-backend ./generate_admin_key.sh' ] || exit 9\ncat "$FAKE/printed"`;
  const run = runWithFakes(generate!.script!, { docker }, { stdin: generate!.stdin, files: { printed } });
  return { run, generate: generate!, host, envAfter: readFileSync(join(root, '.env'), 'utf8'), root };
}

test('the generating script is valid sh, and puts the key into .env in one command, as the plan wrote it', () => {
  const env = envFile(testHost, new Map(Object.entries({ ...BASE, MY_OWN: 'kept' }))).content;
  const { run, generate, host, envAfter, root } = generateOn(env, `Admin key:\n${KEY}\n`);
  assert.equal(syntaxErrors(generate.script!), '');
  assert.equal(run.code, 0, run.stderr);
  assert.equal(run.stdout.trim().split('\n').pop(), KEY);
  // Exactly what the secret step would write with the key: the next run of either changes nothing.
  assert.equal(envAfter, envFile(host, new Map(Object.entries({ ...BASE, CONVEX_ADMIN_KEY: KEY, MY_OWN: 'kept' }))).content);
  assert.equal(statSync(join(root, '.env')).mode & 0o777, 0o600);
  assert.deepEqual(readdirSync(root), ['.env'], 'no temporary file is left');
  assert.equal(parseEnv(envAfter).get('CONVEX_ADMIN_KEY'), KEY);
});

test('the generating script leaves .env alone when the backend prints no key of this instance', () => {
  const env = envFile(testHost, new Map(Object.entries(BASE))).content;
  const { run, envAfter } = generateOn(env, 'other-instance|abcd\nswarm-dev|not-hex\n');
  assert.equal(run.code, 1);
  assert.match(run.stderr, /generate_admin_key\.sh printed no key of the form swarm-dev\|<hex>\. Is the backend image a Convex backend\?/);
  assert.equal(envAfter, env);
});
