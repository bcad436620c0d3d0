// Reliability under faults (issue 7): install.ts killed at random points (SIGINT and SIGKILL),
// two runs at once against one host, a connection lost mid-run on one of two hosts, and a reload
// that failed after its configuration change. Every product action is `npx zx scripts/…` as an
// operator runs it; fleet.exec is used only to inject faults and to look at the droplets.
//
// The kill points are random but seeded: the seed is printed, and RELIABILITY_SEED=<n> replays
// the same signals and delays. Each kill goes to the whole process group of the run (npx, the
// sh it starts, and the node process running the script), as Ctrl-C in a terminal sends SIGINT to
// the foreground group and `kill -9 -<pgid>` kills a job; killing only npx would leave the node
// process running on.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import YAML from 'yaml';
import { fleetUp, useFleet } from '../fleet/index.ts';
import type { Fleet } from '../fleet/index.ts';
import { repoRoot } from '../fleet/paths.ts';
import { waitFor } from '../fleet/proc.ts';
import { installChecks } from '../../checks/index.ts';
import { adminKeyOf, backendUrl, getDocument, putDocument } from './convex-api.ts';
import type { RunJson } from './convex-api.ts';

// RELIABILITY_FLEET=<name> RELIABILITY_REUSE=1 keeps a running fleet of that name (and leaves it
// up afterwards), for working on one test with --test-name-pattern.
const FLEET_NAME = process.env.RELIABILITY_FLEET ?? 'reliability';
const REUSE = process.env.RELIABILITY_REUSE === '1';
const KILLS = Number(process.env.RELIABILITY_KILLS ?? 10);
const SEED = Number(process.env.RELIABILITY_SEED ?? Date.now() % 2 ** 31);
const IMAGES = {
  v1: { backend_image: 'registry.test:5000/convex-backend:v1', dashboard_image: 'registry.test:5000/convex-dashboard:v1' },
  v2: { backend_image: 'registry.test:5000/convex-backend:v2', dashboard_image: 'registry.test:5000/convex-dashboard:v2' },
} as const;
type Version = keyof typeof IMAGES;
const DOC_ID = 'written-before-the-faults';
const DOC = { survives: 'every kill', n: 7, nested: { list: [1, 2, 3] } };

const say = (line: string) => process.stderr.write(`[reliability] ${line}\n`);
say(`seed ${SEED} (replay with RELIABILITY_SEED=${SEED})`);

/** mulberry32: a small seeded generator, so a failing sequence of kills can be replayed. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const random = seeded(SEED);
const sleep = (ms: number) => new Promise<void>(resolve => setTimeout(resolve, ms));

const DROPLETS = [
  { name: 'dev', user: 'root' as const },
  { name: 'prod', user: 'deploy' as const },
];
const fleet: Fleet = REUSE ? await fleetUp({ name: FLEET_NAME, droplets: DROPLETS, reuse: true }) : await useFleet({ name: FLEET_NAME, droplets: DROPLETS });

const inventories: Record<Version, string> = {
  v1: await fleet.writeInventory('images-v1', { defaults: IMAGES.v1 }),
  v2: await fleet.writeInventory('images-v2', { defaults: IMAGES.v2 }),
};

// ---------------------------------------------------------------------------------------------
// Running the scripts as an operator does, in a process group of their own so they can be killed.

interface Finished { code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string; seconds: number }

interface Running {
  /** The pid of npx, which is also the process group id. */
  pgid: number;
  output(): string;
  done: Promise<Finished>;
  kill(signal: NodeJS.Signals): void;
}

let runs = 0;
/** Runs still going: a failed test must not leave one behind to change the next test's host. */
const live = new Set<Running>();
afterEach(async () => {
  for (const run of live) run.kill('SIGKILL');
  await Promise.all([...live].map(run => run.done));
});
const logsDir = join(fleet.dir, 'logs');
mkdirSync(logsDir, { recursive: true });

function start(script: string, args: string[], label: string): Running {
  const started = Date.now();
  const argv = ['zx', `scripts/${script}`, ...args];
  const child = spawn('npx', argv, { cwd: repoRoot, detached: true, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1' } });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const log = join(logsDir, `reliability-${String(++runs).padStart(3, '0')}-${label.replace(/[^A-Za-z0-9_.-]+/g, '_')}.log`);
  const done = new Promise<Finished>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      const finished = { code, signal, stdout, stderr, seconds: (Date.now() - started) / 1000 };
      writeFileSync(log, `$ npx ${argv.join(' ')}\nexit: ${code ?? signal}\nseconds: ${finished.seconds}\n--- stdout\n${stdout}\n--- stderr\n${stderr}`);
      resolve(finished);
    });
  });
  const running: Running = {
    pgid: child.pid!,
    output: () => stdout + stderr,
    done,
    kill(signal) {
      try {
        process.kill(-child.pid!, signal);
      } catch {
        // Already gone.
      }
    },
  };
  live.add(running);
  void done.then(() => live.delete(running));
  return running;
}

const install = (hosts: string, version: Version, label: string, extra: string[] = []) =>
  start('install.ts', ['--host', hosts, '--inventory', inventories[version], '--json', ...extra], label);

function parseJson(run: Finished): RunJson {
  try {
    return JSON.parse(run.stdout) as RunJson;
  } catch {
    throw new Error(`no JSON document on stdout (exit ${run.code ?? run.signal}):\n${run.stdout}\n${run.stderr}`);
  }
}

/** Resolves when `pattern` appears in the run's output, or rejects when the run ends first. */
async function waitForOutput(run: Running, pattern: RegExp, timeoutMs = 300_000): Promise<void> {
  let ended = false;
  void run.done.then(() => (ended = true));
  const deadline = Date.now() + timeoutMs;
  while (!pattern.test(run.output())) {
    if (ended) throw new Error(`the run ended before ${pattern} appeared:\n${run.output()}`);
    if (Date.now() > deadline) throw new Error(`${pattern} did not appear within ${timeoutMs / 1000}s:\n${run.output()}`);
    await sleep(50);
  }
}

/** What the run was doing when it was killed: the last line it printed. */
const lastLine = (run: Running) => run.output().trim().split('\n').filter(l => !l.startsWith('{')).pop()?.replace(/\s+/g, ' ').slice(0, 110) ?? '(nothing printed yet)';

/** Kills the run's process group and waits for it to be gone. SIGINT must stop it promptly. */
async function killRun(run: Running, signal: NodeJS.Signals): Promise<Finished> {
  run.kill(signal);
  const finished = await Promise.race([run.done, sleep(20_000).then(() => undefined)]);
  if (finished) return finished;
  run.kill('SIGKILL');
  throw new Error(`the run did not stop within 20s of ${signal}`);
}

// ---------------------------------------------------------------------------------------------
// What "converged" means, checked after every re-run.

const sh = async (droplet: string, cmd: string) => (await fleet.exec(droplet, cmd)).stdout.trim();
const CHECK_NAMES = installChecks.map(c => `check ${c.name}`);

function assertRunConverged(run: Finished, hosts: string[], why: string): RunJson {
  const detail = `${why}: exit ${run.code ?? run.signal}\n${run.stderr.slice(-4000)}`;
  assert.equal(run.code, 0, detail);
  const json = parseJson(run);
  for (const host of hosts) {
    const entry = json.hosts.find(h => h.host === host);
    assert.ok(entry, `${why}: ${host} is missing from the recap`);
    assert.equal(entry.recap.failed, 0, detail);
    const checks = entry.steps.filter(s => s.step.startsWith('check '));
    assert.deepEqual(checks.map(s => s.step).sort(), [...CHECK_NAMES].sort(), `${why}: ${host} did not run every check`);
    for (const check of checks) assert.equal(check.status, 'ok', `${why}: ${host} ${check.step}: ${check.detail}`);
  }
  return json;
}

/** Live files are whole: each is exactly a version convex-ops writes, never a prefix of one. */
async function assertLiveFilesWhole(droplet: string, why: string): Promise<void> {
  const env = await sh(droplet, 'cat /opt/convex/.env 2>/dev/null || true');
  if (env) {
    assert.match(env, /^# Managed by convex-ops\./, `${why}: .env lost its head`);
    for (const key of ['COMPOSE_PROJECT_NAME', 'INSTANCE_SECRET', 'POSTGRES_PASSWORD', 'POSTGRES_URL']) {
      assert.equal(env.split('\n').filter(l => l.startsWith(`${key}=`)).length, 1, `${why}: .env has ${key} not exactly once:\n${env.replace(/=.*/g, '=…')}`);
    }
  }
  const compose = await sh(droplet, 'cat /opt/convex/docker-compose.yml 2>/dev/null || true');
  if (compose) {
    const doc = YAML.parse(compose) as { services: Record<string, { image: string }>; networks: unknown };
    assert.ok(doc.networks, `${why}: docker-compose.yml is cut short`);
    assert.ok(Object.values(IMAGES).some(i => i.backend_image === doc.services.backend?.image), `${why}: docker-compose.yml names backend image ${doc.services.backend?.image}`);
  }
  const hba = await sh(droplet, 'cat /etc/postgresql/*/main/pg_hba.conf 2>/dev/null || true');
  if (hba) {
    const begins = hba.split('# BEGIN Managed by convex-ops').length - 1;
    const ends = hba.split('# END convex-ops').length - 1;
    assert.ok(begins <= 1 && begins === ends, `${why}: pg_hba.conf has ${begins} BEGIN and ${ends} END markers`);
    assert.match(hba, /^local\s+all\s+postgres\s+peer/m, `${why}: pg_hba.conf lost the distribution's lines`);
  }
}

/** Nothing duplicated and nothing left half-done on a converged host. */
async function assertHostClean(droplet: string, why: string): Promise<void> {
  await assertLiveFilesWhole(droplet, why);
  assert.equal(await sh(droplet, "grep -c '^# BEGIN Managed by convex-ops' /etc/postgresql/*/main/pg_hba.conf"), '1', `${why}: pg_hba.conf must hold exactly one block`);
  const containers = (await sh(droplet, "docker ps -a --format '{{.Names}} {{.Label \"com.docker.compose.project\"}} {{.State}}'")).split('\n').sort();
  assert.deepEqual(containers, ['convex-backend convex running', 'convex-dashboard convex running'], `${why}: containers other than one compose project's two`);
  assert.equal(await sh(droplet, "find /opt/convex/ /etc/postgresql -maxdepth 4 -name '.*.convex-ops.??????'"), '', `${why}: temporary files were left behind`);
  assert.equal(await sh(droplet, 'ls -A /var/lib/convex-ops/pending 2>/dev/null || true'), '', `${why}: a reload or restart is still pending`);
}

/** The document written after the first install, through the API and on the data volume. */
async function assertDocumentIntact(droplet: string, why: string): Promise<void> {
  const key = await adminKeyOf(fleet, droplet);
  const read = await getDocument(backendUrl(fleet, droplet), key, DOC_ID);
  assert.equal(read.status, 200, `${why}: GET /api/documents/${DOC_ID} answered ${read.status}: ${JSON.stringify(read.body)}`);
  assert.deepEqual(read.body, DOC, `${why}: the document changed`);
  const copy = await sh(droplet, `cat /mnt/convex_${droplet}/data/storage/${DOC_ID}.json`);
  assert.deepEqual(JSON.parse(copy), DOC, `${why}: the copy on the data volume changed`);
}

const backendImage = (droplet: string) => sh(droplet, "docker inspect --format '{{.Config.Image}}' convex-backend");
const secretsOf = (droplet: string) => sh(droplet, "grep -E '^(INSTANCE_SECRET|POSTGRES_PASSWORD|CONVEX_ADMIN_KEY)=' /opt/convex/.env | sha256sum");

// ---------------------------------------------------------------------------------------------

const current: Record<string, Version> = { dev: 'v1', prod: 'v1' };
let devSecrets = '';

/** dev installed, the document written, its secrets noted: what the first test leaves behind. */
async function baseline(): Promise<void> {
  if (devSecrets) return;
  const run = await install('dev', current.dev, 'dev-baseline').done;
  assertRunConverged(run, ['dev'], 'the baseline install of dev');
  assert.equal(await putDocument(backendUrl(fleet, 'dev'), await adminKeyOf(fleet, 'dev'), DOC_ID, DOC), 200);
  await assertDocumentIntact('dev', 'right after writing it');
  devSecrets = await secretsOf('dev');
}

test('the very first install on a fresh droplet, killed twice, converges on the next run', { timeout: 60 * 60_000 }, async () => {
  const signals: NodeJS.Signals[] = random() < 0.5 ? ['SIGINT', 'SIGKILL'] : ['SIGKILL', 'SIGINT'];
  for (const [i, signal] of signals.entries()) {
    const run = install('dev', 'v1', `dev-fresh-kill-${i + 1}`);
    let when: string;
    if (i === 0) {
      // The first kill lands while apt installs the Docker packages (dpkg may be mid-way).
      await waitForOutput(run, /^dev\s+… docker: install/m);
      const extra = Math.round(random() * 30_000);
      await Promise.race([run.done, sleep(extra)]);
      when = `${extra / 1000}s into the Docker packages`;
    } else {
      // The second anywhere in the next two minutes: start-up, then whatever is left to do.
      const delay = Math.round(5000 + random() * 115_000);
      await Promise.race([run.done, sleep(delay)]);
      when = `after ${delay / 1000}s`;
    }
    if (!live.has(run)) {
      say(`fresh install ${i + 1}: finished before its ${signal} (${when})`);
      continue;
    }
    const where = lastLine(run);
    const killed = await killRun(run, signal);
    say(`fresh install kill ${i + 1}: ${signal} ${when} (exit ${killed.code ?? killed.signal}) at: ${where}`);
    await assertLiveFilesWhole('dev', `after fresh kill ${i + 1}`);
  }
  const rerun = await install('dev', 'v1', 'dev-fresh-rerun').done;
  say(`fresh re-run converged in ${rerun.seconds.toFixed(1)}s`);
  assertRunConverged(rerun, ['dev'], 'the re-run after killing the first install');
  await assertHostClean('dev', 'after the first install');
  assert.equal(await sh('dev', "dpkg --audit; ls -A /var/lib/dpkg/updates"), '', 'dpkg was left half-done');

  // The document every later kill must leave intact.
  await baseline();
});

test(`install killed ${KILLS} times at random points while it replaces the containers; every re-run converges and the document survives`, { timeout: 60 * 60_000 }, async () => {
  await baseline();
  // One unkilled switch of images measures how long a run with real work takes here.
  const first: Version = current.dev === 'v1' ? 'v2' : 'v1';
  const measured = await install('dev', first, `dev-measure-${first}`).done;
  assertRunConverged(measured, ['dev'], `the measured switch to ${first}`);
  current.dev = first;
  const span = measured.seconds;
  say(`a run that replaces both containers takes ${span.toFixed(1)}s; kills are spread over that`);

  const signals: NodeJS.Signals[] = [];
  for (let i = 0; i < KILLS; i++) signals.push(i % 2 === 0 ? 'SIGINT' : 'SIGKILL');
  for (let i = signals.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [signals[i], signals[j]] = [signals[j]!, signals[i]!];
  }

  const kills: string[] = [];
  for (let attempt = 0; kills.length < KILLS; attempt++) {
    assert.ok(attempt < KILLS * 2, `only ${kills.length} of ${attempt} runs were still running when their kill came`);
    const signal = signals[kills.length]!;
    const target: Version = current.dev === 'v1' ? 'v2' : 'v1';
    const delay = Math.round((0.03 + random() * 0.92) * span * 1000);
    const run = install('dev', target, `dev-kill-${kills.length + 1}-${signal}-${target}`);
    const ended = await Promise.race([run.done.then(() => true), sleep(delay).then(() => false)]);
    if (ended) {
      const finished = await run.done;
      say(`run to ${target} finished (exit ${finished.code}) before its ${signal} at ${delay / 1000}s; not counted`);
      assertRunConverged(finished, ['dev'], `the run to ${target} that outran its kill`);
      current.dev = target;
      continue;
    }
    const where = lastLine(run);
    const killed = await killRun(run, signal);
    const n = kills.length + 1;
    kills.push(`${signal} at ${(delay / 1000).toFixed(1)}s (${target}): ${where}`);
    say(`kill ${n}/${KILLS}: ${signal} after ${(delay / 1000).toFixed(1)}s of a run to ${target} (exit ${killed.code ?? killed.signal}) at: ${where}`);
    await assertLiveFilesWhole('dev', `right after kill ${n}`);

    const rerun = await install('dev', target, `dev-rerun-${n}-${target}`).done;
    const json = assertRunConverged(rerun, ['dev'], `the re-run after kill ${n} (${signal} at ${delay / 1000}s, seed ${SEED})`);
    // The killed run's lock went with its connection: the re-run did not wait for it.
    assert.doesNotMatch(rerun.stderr, /is being changed by/, `kill ${n}: the re-run waited for the dead run's lock`);
    const changed = json.hosts[0]!.steps.filter(s => s.status === 'changed').map(s => `${s.step}: ${s.detail}`);
    say(`  re-run ${n} converged in ${rerun.seconds.toFixed(1)}s${changed.length ? `, doing: ${changed.join(' | ').slice(0, 300)}` : ', with nothing left to do'}`);
    current.dev = target;
    assert.equal(await backendImage('dev'), IMAGES[target].backend_image);
    await assertHostClean('dev', `after the re-run of kill ${n}`);
    await assertDocumentIntact('dev', `after kill ${n} (${signal} at ${delay / 1000}s, seed ${SEED})`);
    assert.equal(await secretsOf('dev'), devSecrets, `kill ${n}: a secret or the admin key changed`);
  }
  assert.ok(kills.filter(k => k.startsWith('SIGINT')).length >= 1 && kills.filter(k => k.startsWith('SIGKILL')).length >= 1);
});

test('two runs at once against one host: one waits, naming the other, or gives up; nothing is corrupted', { timeout: 30 * 60_000 }, async () => {
  await baseline();
  // Real work for both: other images, and the pg_hba block gone (both would add it).
  await fleet.exec('dev', "sed -i '/^# BEGIN Managed by convex-ops/,/^# END convex-ops/d' /etc/postgresql/*/main/pg_hba.conf");
  const target: Version = current.dev === 'v1' ? 'v2' : 'v1';
  const a = install('dev', target, 'dev-concurrent-a');
  const b = install('dev', target, 'dev-concurrent-b');
  // Whichever waits names the holder; the pid it names belongs to the other run's process group.
  const waiting = /dev is being changed by (\S+@\S+) since (\d\d:\d\d) \(install, pid (\d+)\); waiting up to 300s/;
  await Promise.race([waitForOutput(a, waiting), waitForOutput(b, waiting)]);
  const [waiter, holder] = waiting.test(a.output()) ? [a, b] : [b, a];
  const pid = Number(waiting.exec(waiter.output())![3]);
  const pgid = Number(execFileSync('ps', ['-o', 'pgid=', '-p', String(pid)]).toString().trim());
  assert.equal(pgid, holder.pgid, 'the waiting run names a process of the run that holds the lock');
  const [first, second] = [await holder.done, await waiter.done];
  const holderJson = assertRunConverged(first, ['dev'], 'the run that held the lock');
  const waiterJson = assertRunConverged(second, ['dev'], 'the run that waited');
  assert.ok(holderJson.hosts[0]!.recap.changed > 0, 'the run holding the lock did the work');
  assert.equal(waiterJson.hosts[0]!.recap.changed, 0, 'the waiting run found everything done');
  current.dev = target;
  await assertHostClean('dev', 'after two concurrent runs');
  await assertDocumentIntact('dev', 'after two concurrent runs');
  say(`concurrent: one run held the lock (${first.seconds.toFixed(1)}s), the other waited and then changed nothing (${second.seconds.toFixed(1)}s)`);

  // With a short --lock-timeout the second run gives up instead, clearly, and changes nothing.
  const back: Version = current.dev === 'v1' ? 'v2' : 'v1';
  const long = install('dev', back, 'dev-concurrent-holder');
  await waitForOutput(long, /dev\s+connect\s+ok/);
  const refused = await install('dev', back, 'dev-concurrent-refused', ['--lock-timeout', '2']).done;
  assert.equal(refused.code, 1, refused.stdout + refused.stderr);
  assert.match(refused.stderr, /dev is being changed by \S+@\S+ since \d\d:\d\d \(install, pid \d+\); gave up after 2s\. Wait for that run to finish, or raise --lock-timeout\./);
  assert.deepEqual(parseJson(refused).hosts[0]!.steps.map(s => s.step), ['connect'], 'the refused run did nothing past connecting');
  assertRunConverged(await long.done, ['dev'], 'the run that held the lock while another gave up');
  current.dev = back;
  await assertHostClean('dev', 'after a refused concurrent run');
  await assertDocumentIntact('dev', 'after a refused concurrent run');
});

test('a pg_hba.conf change whose reload failed is reloaded by the next run', { timeout: 30 * 60_000 }, async () => {
  await baseline();
  const hba = '/etc/postgresql/*/main/pg_hba.conf';
  // What the running PostgreSQL allows (not what the file says): a login as the backend's role
  // from inside the backend container's network, which only convex-ops' pg_hba block lets in.
  // (Asking the backend would show it too, but would leave ERROR lines in its log for the checks.)
  const bridgeLogin = async () =>
    (
      await fleet.exec(
        'dev',
        `PGPASSWORD="$(sed -n 's/^POSTGRES_PASSWORD=//p' /opt/convex/.env)" nsenter -n -t "$(docker inspect -f '{{.State.Pid}}' convex-backend)" psql -XAtq -h "$(ip -4 -o addr show docker0 | awk '{split($4, a, "/"); print a[1]}')" -U convex -d convex_self_hosted -c 'select 42' 2>&1`,
        { allowFail: true },
      )
    ).stdout.trim();
  for (const fault of ['the reload fails', 'the connection drops right after the write'] as const) {
    assert.equal(await bridgeLogin(), '42', 'the backend role cannot log in over the bridge before the fault');
    // The block is removed and PostgreSQL reloaded: the backend could no longer reach its database.
    await fleet.exec('dev', `sed -i '/^# BEGIN Managed by convex-ops/,/^# END convex-ops/d' ${hba} && cd / && runuser -u postgres -- psql -XAtqc 'select pg_reload_conf()' >/dev/null`);
    // pg_reload_conf() returns before PostgreSQL has read the file again: poll the login.
    await waitFor('the login to be refused without the pg_hba block', 60_000, async () => (/no pg_hba\.conf entry/.test(await bridgeLogin()) ? true : undefined));
    // The fault strikes the moment the new pg_hba.conf is in place, before the run can reload:
    // PostgreSQL's socket folder becomes unusable (psql, and so pg_reload_conf(), fail), or the
    // run's SSH session is killed.
    const strike = fault === 'the reload fails' ? 'chmod 000 /var/run/postgresql' : "pkill -f '^sshd: root@notty'";
    await fleet.exec('dev', 'rm -f /tmp/stop-watching');
    const watcher = fleet.exec('dev', `until [ -e /tmp/stop-watching ]; do grep -qs '^# BEGIN Managed by convex-ops' ${hba} && { ${strike}; exit 0; }; done; exit 1`, { allowFail: true });
    const failed = await install('dev', current.dev, `dev-reload-${fault.split(' ')[1]}`).done;
    await fleet.exec('dev', 'touch /tmp/stop-watching');
    assert.equal((await watcher).code, 0, 'the fault was not injected');
    await fleet.exec('dev', 'chmod 2775 /var/run/postgresql');
    assert.equal(failed.code, 1, `${fault}: the run should have failed\n${failed.stderr}`);
    const postgresStep = parseJson(failed).hosts[0]!.steps.find(s => s.step === 'postgres');
    assert.equal(postgresStep?.status, 'failed', `${fault}: ${failed.stderr}`);
    assert.match(postgresStep!.detail, fault === 'the reload fails' ? /reload PostgreSQL \(pg_hba\.conf\) failed/ : /dev: connection lost during .*Run again/);
    assert.equal(await sh('dev', `grep -c '^# BEGIN Managed by convex-ops' ${hba}`), '1', 'the new pg_hba.conf is in place');
    assert.equal(await sh('dev', 'ls /var/lib/convex-ops/pending'), 'postgresql-reload', 'the reload is recorded as pending');
    assert.match(await bridgeLogin(), /no pg_hba\.conf entry/, `${fault}: PostgreSQL was reloaded after all`);

    // The next run finds pg_hba.conf as it wants it, and still reloads.
    const next = await install('dev', current.dev, `dev-reload-next-${fault.split(' ')[1]}`).done;
    const json = assertRunConverged(next, ['dev'], `the run after "${fault}"`);
    const step = json.hosts[0]!.steps.find(s => s.step === 'postgres')!;
    assert.equal(step.status, 'changed');
    assert.match(step.detail, /^reload PostgreSQL \(pg_hba\.conf\)$/, 'the next run only reloads');
    assert.equal(await bridgeLogin(), '42', `${fault}: the next run did not make the change live`);
    await assertHostClean('dev', `after "${fault}" and the next run`);
    await assertDocumentIntact('dev', `after "${fault}" and the next run`);
    say(`reload: ${fault}; the next run did "${step.detail}"`);
  }
});

test('temporary files that a killed write left beside live files are removed by the next run, and nothing else changes', { timeout: 30 * 60_000 }, async () => {
  await baseline();
  const converged = await install('dev', current.dev, 'dev-before-litter').done;
  assertRunConverged(converged, ['dev'], 'the run before the litter');
  const started = await sh('dev', "docker inspect --format '{{.State.StartedAt}}' convex-backend convex-dashboard");
  // What a write killed between mktemp and mv leaves: a hidden partial copy beside the target.
  const targets = ['/opt/convex/.env', '/opt/convex/docker-compose.yml', '$(ls -d /etc/postgresql/*/main)/pg_hba.conf'];
  for (const target of targets) {
    await fleet.exec('dev', `t="${target}"; head -c 40 "$t" > "$(dirname "$t")/.$(basename "$t").convex-ops.Kx7Q2z" && chmod 600 "$(dirname "$t")/.$(basename "$t").convex-ops.Kx7Q2z"`);
  }
  assert.equal((await sh('dev', "find /opt/convex/ /etc/postgresql -maxdepth 4 -name '.*.convex-ops.??????'")).split('\n').length, 3);
  const run = await install('dev', current.dev, 'dev-after-litter').done;
  const json = assertRunConverged(run, ['dev'], 'the run after the litter');
  const changes = json.hosts[0]!.steps.filter(s => s.status === 'changed').map(s => s.detail).sort();
  assert.deepEqual(changes, [
    'remove a temporary file of .env left by an interrupted run',
    'remove a temporary file of docker-compose.yml left by an interrupted run',
    'remove a temporary file of pg_hba.conf left by an interrupted run',
  ]);
  await assertHostClean('dev', 'after removing the litter');
  assert.equal(await sh('dev', "docker inspect --format '{{.State.StartedAt}}' convex-backend convex-dashboard"), started, 'containers were restarted');
  await assertDocumentIntact('dev', 'after removing the litter');
});

test('one of two hosts loses its connection mid-run: the other completes, and a re-run converges with nothing duplicated', { timeout: 60 * 60_000 }, async () => {
  await baseline();
  // prod's first install, untouched; then both hosts are on the same images.
  const prodFirst = await install('prod', current.dev, 'prod-first-install').done;
  assertRunConverged(prodFirst, ['prod'], "prod's install");
  current.prod = current.dev;
  for (const drop of ['sshd-killed', 'network-down'] as const) {
    const target: Version = current.dev === 'v1' ? 'v2' : 'v1';
    // prod gets the same images, so both hosts replace their containers in this run.
    assert.equal(current.prod, current.dev, 'prod and dev should be on the same images here');
    const run = install('dev,prod', target, `both-${drop}`);
    await waitForOutput(run, /^dev\s+compose\s+changed/m);
    if (drop === 'sshd-killed') {
      // The sshd processes serving the run's session die: the TCP connection is closed at once.
      await fleet.exec('dev', "pkill -f '^sshd: root@notty'");
    } else {
      // The droplet drops off the network without closing anything: only keepalives notice.
      await fleet.exec('dev', 'ip route show default > /root/default-route && ip link set eth0 down');
      await sleep(45_000);
      await fleet.exec('dev', 'ip link set eth0 up && ip route replace $(cat /root/default-route)');
    }
    const finished = await run.done;
    assert.equal(finished.code, 1, finished.stderr);
    const json = parseJson(finished);
    const dev = json.hosts.find(h => h.host === 'dev')!;
    const failedStep = dev.steps.find(s => s.status === 'failed');
    assert.ok(failedStep, `${drop}: dev did not fail`);
    assert.match(failedStep.detail, /^dev: connection lost during "[^"]+": .+\. Run again: every step is safe to repeat\.$/s, `${drop}: unclear message: ${failedStep.detail}`);
    assert.match(finished.stderr, /dev\s+\S+\s+failed\s+[\d.]+s\s+dev: connection lost during/);
    const prod = json.hosts.find(h => h.host === 'prod')!;
    assert.equal(prod.recap.failed, 0, `${drop}: prod failed too:\n${finished.stderr}`);
    assert.deepEqual(prod.steps.filter(s => s.step.startsWith('check ')).map(s => s.status), CHECK_NAMES.map(() => 'ok'), `${drop}: prod's checks`);
    assert.equal(await backendImage('prod'), IMAGES[target].backend_image, `${drop}: prod did not finish its work`);
    current.prod = target;
    say(`connection loss (${drop}): dev failed at "${failedStep.step}" with: ${failedStep.detail.split('\n')[0]}; prod finished in ${prod.recap.ok + prod.recap.changed} steps`);

    const rerun = await install('dev,prod', target, `both-rerun-${drop}`).done;
    assertRunConverged(rerun, ['dev', 'prod'], `the re-run after ${drop}`);
    current.dev = target;
    for (const host of ['dev', 'prod']) await assertHostClean(host, `${host} after ${drop} and a re-run`);
    await assertDocumentIntact('dev', `after ${drop} and a re-run`);
    assert.equal(await secretsOf('dev'), devSecrets, `${drop}: a secret or the admin key of dev changed`);
  }
});

test('a volume path that is not a directory is refused, and nothing changes', async () => {
  await baseline();
  await fleet.exec('dev', 'echo not a folder > /root/not-a-dir');
  const before = await sh('dev', 'readlink /opt/convex; sha256sum /opt/convex/.env /opt/convex/docker-compose.yml');
  const inventory = await fleet.writeInventory('volume-file', { hosts: { dev: { volume: '/root/not-a-dir' } } });
  const run = await fleet.runScript('install.ts', ['--host', 'dev', '--inventory', inventory]);
  assert.equal(run.code, 1, run.stdout);
  assert.match(run.stdout, /the volume \/root\/not-a-dir is not a directory \(file\)\. Fix hosts\.dev\.volume; nothing was changed\./);
  assert.equal(await sh('dev', 'readlink /opt/convex; sha256sum /opt/convex/.env /opt/convex/docker-compose.yml'), before);
  assert.equal(await sh('dev', 'cat /root/not-a-dir'), 'not a folder');
});

test('nothing in the product can destroy data: no compose down -v, no DROP, no volume removal', () => {
  const files = execFileSync('git', ['ls-files', '-co', '--exclude-standard', 'scripts', 'files', 'checks'], { cwd: repoRoot }).toString().split('\n').filter(f => /\.(ts|sh|ya?ml|conf)$/.test(f));
  assert.ok(files.length > 10);
  const forbidden: Array<[string, RegExp]> = [
    ['compose down with volumes', /\bdown\b[^\n]*(\s-v\b|--volumes)/],
    ['DROP in SQL', /\bDROP\s+(DATABASE|ROLE|USER|TABLE|SCHEMA|OWNED)\b/i],
    ['docker volume removal', /docker[^\n]*\bvolume\s+(rm|prune)\b/],
    ['docker prune of volumes', /docker[^\n]*\bsystem\s+prune\b[^\n]*--volumes/],
  ];
  const found: string[] = [];
  for (const file of files) {
    const text = readFileSync(join(repoRoot, file), 'utf8');
    for (const [what, pattern] of forbidden) if (pattern.test(text)) found.push(`${file}: ${what}: ${pattern.exec(text)![0]}`);
  }
  assert.deepEqual(found, []);
});
