// The up step as data: facts about containers, images and compose's inputs in, the start out;
// and the start's remote script itself, run with sh against a stand-in docker and curl.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ContainerState, DockerState } from '../../scripts/lib/steps/docker.ts';
import type { UpFacts } from '../../scripts/lib/steps/up.ts';
import { composeInputsHash, planUp, scriptFailure, startContainersScript, waitHealthyScript } from '../../scripts/lib/steps/up.ts';
import { absent, file, testHost } from './fixtures.ts';
import { runWithFakes, syntaxErrors } from './fake-commands.ts';
import { HostMemo } from '../../scripts/lib/step.ts';

const labels = (changes: Array<{ label: string }>) => changes.map(c => c.label);

const COMPOSE = 'services:\n  backend:\n    environment:\n      INSTANCE_SECRET: ${INSTANCE_SECRET}\n';
const ENV = 'INSTANCE_SECRET=0123456789abcdef0123456789abcdef\nCONVEX_ADMIN_KEY=swarm-dev|00\n';
const docker: DockerState = { cli: true, engine: true, running: true, compose: 'v2' };

function container(image: string, imageId: string, health: string, more: Partial<ContainerState> = {}): ContainerState {
  return { status: 'running', health, startedAt: '2026-12-01T10:00:00.123456Z', configImage: image, imageId, restarts: 0, composeProject: 'convex', ...more };
}

/** The host as a successful start leaves it. */
function converged(): UpFacts {
  return {
    containers: new Map([
      ['convex-backend', container(testHost.backend_image, 'sha256:b1', 'healthy')],
      ['convex-dashboard', container(testHost.dashboard_image, 'sha256:d1', '')],
    ]),
    images: new Map([
      [testHost.backend_image, 'sha256:b1'],
      [testHost.dashboard_image, 'sha256:d1'],
    ]),
    applied: composeInputsHash(COMPOSE, ENV),
    compose: file(COMPOSE),
    env: file(ENV, '600'),
    docker,
  };
}

test('up: a converged host needs nothing', () => {
  assert.deepEqual(planUp(converged(), testHost), []);
});

test('up: a fresh host pulls both images and starts everything, in one change', () => {
  const changes = planUp({ ...converged(), containers: new Map(), images: new Map([[testHost.backend_image, ''], [testHost.dashboard_image, '']]), applied: '' }, testHost);
  assert.deepEqual(labels(changes), [
    'pull r/convex-backend:1, r/convex-dashboard:1 and start containers (convex-backend does not exist, convex-dashboard does not exist, compose file or .env changed)',
  ]);
  assert.match(changes[0]!.script!, /^pull r\/convex-backend:1\npull r\/convex-dashboard:1$/m);
  assert.ok(changes[0]!.streams);
});

test('up: stopped or failing containers, another image, or changed compose inputs each start the containers', () => {
  const facts = converged();
  const stopped = new Map(facts.containers).set('convex-dashboard', container(testHost.dashboard_image, 'sha256:d1', '', { status: 'exited' }));
  assert.deepEqual(labels(planUp({ ...facts, containers: stopped }, testHost)), ['start containers (convex-dashboard is exited)']);
  const looping = new Map(facts.containers).set('convex-backend', container(testHost.backend_image, 'sha256:b1', 'starting', { restarts: 3 }));
  assert.deepEqual(labels(planUp({ ...facts, containers: looping }, testHost)), ['start containers (convex-backend is restarting)']);
  const other = new Map(facts.containers).set('convex-backend', container('r/convex-backend:0', 'sha256:b0', 'healthy'));
  assert.deepEqual(labels(planUp({ ...facts, containers: other }, testHost)), ['start containers (convex-backend runs another image)']);
  // The same reference, re-pulled to another image ID: the container still runs the old one.
  const repulled = new Map(facts.images).set(testHost.backend_image, 'sha256:b2');
  assert.deepEqual(labels(planUp({ ...facts, images: repulled }, testHost)), ['start containers (convex-backend runs another image)']);
  assert.deepEqual(labels(planUp({ ...facts, env: file(ENV.replace('0123', '9999'), '600') }, testHost)), ['start containers (compose file or .env changed)']);
  // The admin key is not one of compose's inputs: adding it restarts nothing.
  assert.deepEqual(planUp({ ...facts, env: file(ENV + 'OTHER=1\n', '600') }, testHost), []);
});

test('up: the compose command is the one the docker step found', () => {
  const facts = { ...converged(), applied: 'old' };
  assert.match(planUp(facts, testHost)[0]!.script!, /^must 'compose up backend' docker compose up -d backend$/m);
  assert.match(planUp({ ...facts, docker: { ...docker, compose: 'v1' } }, testHost)[0]!.script!, /^must 'compose up' docker-compose up -d$/m);
});

test('up: without compose, .env or Compose the start is listed (a dry run) and fails with the fix (a real run)', () => {
  const noFiles = planUp({ ...converged(), compose: absent }, testHost);
  assert.deepEqual(labels(noFiles), ['start containers (after compose and .env are written)']);
  assert.equal(noFiles[0]!.failure!({ code: 1, stdout: '', stderr: '' }, new HostMemo()), '/opt/convex/docker-compose.yml or /opt/convex/.env is missing. Run scripts/secret.ts and scripts/compose.ts first.');
  const noCompose = planUp({ ...converged(), docker: { ...docker, compose: 'none' } }, testHost);
  assert.deepEqual(labels(noCompose), ['start containers (after Docker Compose is installed)']);
  assert.equal(noCompose[0]!.failure!({ code: 1, stdout: '', stderr: '' }, new HostMemo()), 'Docker Compose is not installed. Run scripts/docker.ts first.');
});

test('the start and wait scripts are valid sh', () => {
  assert.equal(syntaxErrors(startContainersScript(testHost, 'docker compose', { pull: ['r/a:1', "r/it's:2"], appliedHash: 'abc' })), '');
  assert.equal(syntaxErrors(waitHealthyScript(testHost, { dashboard: true })), '');
});

// ------------------------------------------------------------------ the remote script, run here

/**
 * A docker that answers the health probe from $FAKE/states (one line per probe, the last one
 * repeated; "missing" when the container is not there), pulls and composes as $FAKE/pulls and
 * $FAKE/compose say, and logs every call in $FAKE/calls.
 */
const DOCKER = [
  'echo "$*" >> "$FAKE/calls"',
  'case "$*" in',
  '  *RestartCount*)',
  '    n=$(( $(cat "$FAKE/polls" 2>/dev/null || echo 0) + 1 )); echo "$n" > "$FAKE/polls"',
  '    line=$(sed -n "${n}p" "$FAKE/states"); [ -n "$line" ] || line=$(tail -n 1 "$FAKE/states")',
  '    [ "$line" = missing ] && exit 1',
  '    echo "$line";;',
  '  *@@check*) cat "$FAKE/health-log" 2>/dev/null || true;;',
  "  'logs --tail 15 convex-backend') printf 'backend log %s\\n' 1 2 3;;",
  "  'pull -q '*)",
  '    n=$(( $(cat "$FAKE/pulled" 2>/dev/null || echo 0) + 1 )); echo "$n" > "$FAKE/pulled"',
  '    line=$(sed -n "${n}p" "$FAKE/pulls" 2>/dev/null)',
  '    [ -z "$line" ] || [ "$line" = ok ] || { echo "$line" >&2; exit 1; };;',
  '  compose*) if [ -s "$FAKE/compose" ]; then cat "$FAKE/compose" >&2; exit 1; fi; echo "Container convex-backend Started";;',
  'esac',
].join('\n');

const CURL = `cat "$FAKE/dashboard" 2>/dev/null || printf 'dashboard 000'`;

function waitFor(states: string[], opts: { dashboard?: boolean; answer?: string; healthLog?: string; pace?: number } = {}) {
  const files: Record<string, string> = { states: states.join('\n') + '\n', pace: String(opts.pace ?? 1) };
  if (opts.answer) files.dashboard = opts.answer;
  if (opts.healthLog) files['health-log'] = opts.healthLog;
  const run = runWithFakes(waitHealthyScript(testHost, { dashboard: opts.dashboard ?? true }), { docker: DOCKER, curl: CURL }, { files });
  return { ...run, failure: scriptFailure(run), elapsed: Number(readFileSync(join(run.dir, 'clock'), 'utf8')) - 1000 };
}

test('the wait ends as soon as the backend is healthy and the dashboard answers', () => {
  const run = waitFor(['running 0 starting', 'running 0 starting', 'running 0 healthy'], { answer: 'dashboard 200' });
  assert.equal(run.code, 0, run.stderr);
  assert.equal(run.elapsed, 4);
  assert.match(run.stdout, /^waiting for the backend to be healthy \(starting\) and the dashboard to answer$/m);
  assert.equal(waitFor(['running 0 healthy'], { dashboard: false }).code, 0, 'without the dashboard its answer is not needed');
});

test('the wait fails at once on a backend that exited, with its last log lines', () => {
  const run = waitFor(['running 0 starting', 'exited 0 '], { answer: 'dashboard 200' });
  assert.equal(run.code, 1);
  assert.equal(run.failure, 'the backend is not staying up (exited, 0 restarts). Last log lines:\nbackend log 1\nbackend log 2\nbackend log 3\nRun scripts/doctor.ts --host dev for the cause.');
});

test('restarts from before the wait do not count; two more since it began fail it', () => {
  assert.equal(waitFor(['running 7 starting', 'running 8 starting', 'running 8 healthy'], { answer: 'dashboard 200' }).code, 0, 'one restart is waited out');
  const loop = waitFor(['running 7 starting', 'running 8 starting', 'running 9 starting'], { answer: 'dashboard 200' });
  assert.equal(loop.code, 1);
  assert.match(loop.failure!, /^the backend is not staying up \(running, 9 restarts\)\. Last log lines:$/m);
});

test('a backend that runs but stays unhealthy fails after 30 s with its health check\'s last output', () => {
  const healthLog = '@@check 0\nok\n@@check 1\n  % Total    % Received\r  0     0    0     0\rcurl: (22) The requested URL returned error: 500 \n\n';
  // Each sleep of 2 s counts as 10 s here: first seen unhealthy at 10 s, failed at 40 s.
  const run = waitFor(['running 0 starting', 'running 0 unhealthy'], { healthLog, pace: 5 });
  assert.equal(run.code, 1);
  assert.equal(run.failure, 'the backend stays unhealthy: its health check keeps failing (exit 1: curl: (22) The requested URL returned error: 500). Run scripts/doctor.ts --host dev for the cause.');
  assert.equal(run.elapsed, 40);
  assert.equal(waitFor(['running 0 unhealthy', 'running 0 unhealthy', 'running 1 starting', 'running 1 unhealthy', 'running 1 unhealthy', 'running 1 unhealthy', 'running 1 healthy'], { answer: 'dashboard 200', pace: 5 }).code, 0, 'a restart (health "starting" again) starts the 30 s anew');
  assert.match(waitFor(['running 0 unhealthy'], { pace: 5 }).failure!, /keeps failing \(no health check result yet\)/);
});

test('the wait is bounded: about 150 s, then it says what it last saw', () => {
  // Each sleep of 2 s counts as 30 s here: the bound is reached in a few polls.
  const run = waitFor(['running 0 starting'], { pace: 15 });
  assert.equal(run.code, 1);
  assert.equal(run.failure, 'the backend did not become healthy within 150s (backend starting; dashboard 000). Run scripts/doctor.ts --host dev.');
});

function start(files: Record<string, string>, pull: string[] = []) {
  const root = mkdtempSync(join(tmpdir(), 'convex-ops-root-'));
  // mkdir fails: the record of the applied hash, the script's last command, is never written here.
  const run = runWithFakes(startContainersScript({ ...testHost, root }, 'docker compose', { pull, appliedHash: 'abc' }), { docker: DOCKER, curl: CURL, mkdir: 'exit 1' }, { files });
  const calls = readFileSync(join(run.dir, 'calls'), 'utf8').split('\n').filter(c => !c.startsWith('inspect'));
  return { ...run, failure: scriptFailure(run), calls: calls.filter(Boolean) };
}

test('the start pulls (retrying a network failure), starts the backend, waits, starts the rest, waits, then records', () => {
  const run = start({ states: 'running 0 healthy\n', dashboard: 'dashboard 200', pulls: 'Get "https://r/v2/": net/http: TLS handshake timeout\nok\n' }, ['r/convex-backend:1']);
  assert.deepEqual(run.calls, ['pull -q r/convex-backend:1', 'pull -q r/convex-backend:1', 'compose up -d backend', 'compose up -d']);
  assert.match(run.stdout, /^docker pull r\/convex-backend:1 failed; trying again in 2 s$/m);
  assert.equal(run.failure, 'dev: recording the applied configuration in /var/lib/convex-ops/compose-applied failed');
});

test('the start stops at a pull that cannot succeed, and at a failing compose, with its output', () => {
  const missing = start({ states: 'running 0 healthy\n', pulls: 'manifest unknown: manifest unknown\n' }, ['r/convex-backend:1']);
  assert.deepEqual(missing.calls, ['pull -q r/convex-backend:1']);
  assert.equal(missing.failure, 'dev: docker pull r/convex-backend:1 failed (exit 1):\nmanifest unknown: manifest unknown');
  const flaky = start({ states: 'running 0 healthy\n', pulls: 'timeout\ntimeout\ntimeout\ntimeout\n' }, ['r/convex-backend:1']);
  assert.equal(flaky.calls.length, 4, 'four attempts in all');
  assert.match(flaky.failure!, /^dev: docker pull r\/convex-backend:1 failed \(exit 1\):\ntimeout$/);
  const refused = start({ states: 'running 0 healthy\n', compose: 'docker compose: boom\n' });
  assert.deepEqual(refused.calls, ['compose up -d backend']);
  assert.equal(refused.failure, 'dev: compose up backend failed (exit 1):\ndocker compose: boom');
});
