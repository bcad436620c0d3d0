// The secret step as data: the .env read on the host (and what an earlier install left) in, its
// write out. New secrets come from fixed generators here, so every plan is exact.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Host } from '../../scripts/lib/inventory.ts';
import type { ContainerState } from '../../scripts/lib/steps/docker.ts';
import type { SecretFacts } from '../../scripts/lib/steps/secret.ts';
import { envFile, parseEnv, planSecret, renderEnv } from '../../scripts/lib/steps/secret.ts';
import { absent, file, testHost } from './fixtures.ts';

const labels = (changes: Array<{ label: string }>) => changes.map(c => c.label);

const SECRET = 'a1'.repeat(32);
const PASSWORD = 'P4ssw0rdFromTheGenerator0123456789abcdef';
const generate = { secret: () => SECRET, password: () => PASSWORD };

const fresh: SecretFacts = { env: absent, credentials: undefined, compose: absent, containers: new Map(), localFiles: false };

/** The .env the step writes from `values`, as the host then has it. */
const written = (host: Host, values: Record<string, string>) => file(envFile(host, new Map(Object.entries(values))).content, '600');

test('secret: a fresh host gets a .env with a generated INSTANCE_SECRET and password', () => {
  const changes = planSecret(fresh, testHost, generate);
  assert.deepEqual(labels(changes), ['create .env, with a generated INSTANCE_SECRET']);
  assert.deepEqual(Object.fromEntries(parseEnv(changes[0]!.stdin!)), {
    COMPOSE_PROJECT_NAME: 'convex',
    INSTANCE_SECRET: SECRET,
    POSTGRES_PASSWORD: PASSWORD,
    POSTGRES_URL: `postgresql://convex:${PASSWORD}@host.docker.internal:5432?sslmode=disable`,
  });
  assert.match(changes[0]!.script!, /chmod 600 "\$tmp"/);
  // The diff names the keys and masks every value.
  assert.match(changes[0]!.diff!, /^\+INSTANCE_SECRET=\*{8}$/m);
  assert.doesNotMatch(changes[0]!.diff!, new RegExp(`${SECRET}|${PASSWORD}`));
});

test('secret: a .env already in place changes nothing; a wrong mode is set back', () => {
  const content = envFile(testHost, new Map(Object.entries({ COMPOSE_PROJECT_NAME: 'convex', INSTANCE_SECRET: SECRET, POSTGRES_PASSWORD: PASSWORD, POSTGRES_URL: `postgresql://convex:${PASSWORD}@host.docker.internal:5432?sslmode=disable` }))).content;
  assert.deepEqual(planSecret({ ...fresh, env: file(content, '600') }, testHost, generate), []);
  assert.deepEqual(labels(planSecret({ ...fresh, env: file(content, '644') }, testHost, generate)), ['set .env to mode 600 root:root']);
});

test('secret: INSTANCE_SECRET is never rotated; what is missing around it is added', () => {
  const env = written(testHost, { INSTANCE_SECRET: 'f'.repeat(64), MY_OWN: '1' });
  const changes = planSecret({ ...fresh, env, credentials: 'e'.repeat(64) }, testHost, generate);
  assert.deepEqual(labels(changes), ['update .env']);
  const values = parseEnv(changes[0]!.stdin!);
  assert.equal(values.get('INSTANCE_SECRET'), 'f'.repeat(64));
  assert.equal(values.get('MY_OWN'), '1', 'keys the tool does not own are kept');
  assert.equal(values.get('POSTGRES_PASSWORD'), PASSWORD);
});

test('secret: the INSTANCE_SECRET the backend generated itself is adopted, not replaced', () => {
  const changes = planSecret({ ...fresh, credentials: 'e'.repeat(64) }, testHost, generate);
  assert.deepEqual(labels(changes), ['create .env, adopting the INSTANCE_SECRET the backend generated']);
  assert.equal(parseEnv(changes[0]!.stdin!).get('INSTANCE_SECRET'), 'e'.repeat(64));
});

test("secret: the guide's install keeps its secret, its compose file's password and its compose project", () => {
  const host: Host = { ...testHost, postgres: { mode: 'local', user: 'swarm' } };
  const guideCompose = 'services:\n  backend:\n    environment:\n      - POSTGRES_URL=postgresql://swarm:convexpass123@host.docker.internal:5432?sslmode=disable\n';
  const legacy: ContainerState = { status: 'running', health: 'healthy', startedAt: '', configImage: 'r/convex-backend:1', imageId: 'sha256:1', restarts: 0, composeProject: 'convexlegacy' };
  const facts: SecretFacts = { env: file(`INSTANCE_SECRET=${'ab'.repeat(32)}\n`, '600'), credentials: undefined, compose: file(guideCompose), containers: new Map([['convex-backend', legacy]]), localFiles: false };
  const changes = planSecret(facts, host, generate);
  assert.deepEqual(labels(changes), ['replace .env (the original is kept aside)']);
  assert.deepEqual(Object.fromEntries(parseEnv(changes[0]!.stdin!)), {
    COMPOSE_PROJECT_NAME: 'convexlegacy',
    INSTANCE_SECRET: 'ab'.repeat(32),
    POSTGRES_PASSWORD: 'convexpass123',
    POSTGRES_URL: 'postgresql://swarm:convexpass123@host.docker.internal:5432?sslmode=disable',
  });
  // Once written, the next run finds it as wanted.
  assert.deepEqual(planSecret({ ...facts, env: file(changes[0]!.stdin!, '600') }, host, generate), []);
});

test('secret: external PostgreSQL takes the password from its variable and keeps none in .env', () => {
  const host: Host = { ...testHost, postgres: { mode: 'external', user: 'convex', url: 'postgresql://db.example.com:25060?sslmode=require', password_env: 'PLAN_SECRET_TEST_PG' } };
  process.env.PLAN_SECRET_TEST_PG = 'p@ss:w/rd';
  try {
    const current = renderEnv(new Map([['INSTANCE_SECRET', SECRET], ['POSTGRES_PASSWORD', 'left-from-local-mode']]));
    const changes = planSecret({ ...fresh, env: file(current, '600') }, host, generate);
    assert.deepEqual(labels(changes), ['update .env']);
    const values = parseEnv(changes[0]!.stdin!);
    assert.equal(values.has('POSTGRES_PASSWORD'), false);
    assert.equal(values.get('POSTGRES_URL'), 'postgresql://convex:p%40ss%3Aw%2Frd@db.example.com:25060?sslmode=require');
  } finally {
    delete process.env.PLAN_SECRET_TEST_PG;
  }
});

test('secret: a .env that is not a file is refused', () => {
  assert.throws(() => planSecret({ ...fresh, env: { kind: 'other', type: 'directory' } }, testHost, generate), /\/opt\/convex\/\.env exists but is a directory, not a regular file/);
});
