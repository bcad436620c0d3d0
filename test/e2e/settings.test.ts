// [backend_env] and [dashboard_env] end to end (issue 19): bad names refused before connecting,
// with the fix; a knob reaches the backend container's environment and a second run changes
// nothing; a changed knob recreates the backend once; a secret setting is in .env only, never in
// the compose file, the output or the log. Every product action is a script run as a user runs it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fleetHooks } from '../fleet/index.ts';
import { parseRunJson } from './convex-api.ts';

const DROPLET = 'knobs';
const getFleet = fleetHooks({ name: 'settings', droplets: [{ name: DROPLET, user: 'root' }] });
const fleet = new Proxy({} as ReturnType<typeof getFleet>, { get: (_target, key) => Reflect.get(getFleet(), key) });

const sh = async (cmd: string) => (await fleet.exec(DROPLET, cmd)).stdout.trim();

/** A container's environment as Docker runs it. */
async function containerEnv(container: string): Promise<Map<string, string>> {
  const lines = JSON.parse(await sh(`docker inspect --format '{{json .Config.Env}}' ${container}`)) as string[];
  return new Map(lines.map(line => line.split(/=(.*)/s).slice(0, 2) as [string, string]));
}

const startedAt = (container: string) => sh(`docker inspect --format '{{.State.StartedAt}}' ${container}`);

const ADMIN_KEY_VARIABLE = 'SETTINGS_E2E_DASHBOARD_KEY';
const SECRET = 'dash-key-e2e-7f3a9c1b5d';
const secretEnv = (value = SECRET) => ({ [ADMIN_KEY_VARIABLE]: value });

const settings = (retention: number) => ({
  hosts: {
    [DROPLET]: {
      backend_env: { APPLICATION_MAX_CONCURRENT_QUERIES: 32, DOCUMENT_RETENTION_DELAY: retention, LOG_FORMAT: 'json', MY_TEAM_FLAG: 'on' },
      dashboard_env: { NEXT_PUBLIC_ADMIN_KEY: { env: ADMIN_KEY_VARIABLE } },
    },
  },
});

/** Everything the operator sees of a run, and the log it appends to. */
const seen = (run: { stdout: string; stderr: string }) => run.stdout + run.stderr + readFileSync(join(fleet.dir, '.convex-ops', 'convex-ops.log'), 'utf8');

test('unknown, renamed and tool-owned names are refused before connecting, with the fix', async () => {
  const cases: Array<{ why: string; backend_env: Record<string, unknown>; expect: RegExp }> = [
    { why: 'typo', backend_env: { APPLICATION_MAX_CONCURENT_QUERIES: 32 }, expect: /hosts\.knobs\.backend_env\.APPLICATION_MAX_CONCURENT_QUERIES: .*not a variable the backend image is known to read\. Did you mean APPLICATION_MAX_CONCURRENT_QUERIES\? To set it anyway, pass --allow-unknown-env/ },
    { why: 'unknown without the flag', backend_env: { MY_TEAM_FLAG: 'on' }, expect: /MY_TEAM_FLAG is not a variable the backend image is known to read/ },
    { why: 'renamed', backend_env: { ACTIONS_USER_TIMEOUT_SECS: 120 }, expect: /ACTIONS_USER_TIMEOUT_SECS no longer exists: it was replaced by V8_ACTION_USER_TIMEOUT_SECS and NODE_ACTION_USER_TIMEOUT_SECS/ },
    { why: 'owned', backend_env: { INSTANCE_SECRET: 'x' }, expect: /INSTANCE_SECRET is set by convex-ops itself and cannot be overridden here/ },
  ];
  for (const c of cases) {
    const inventory = await fleet.writeInventory(`bad-${c.why.replace(/\W+/g, '-')}`, { hosts: { [DROPLET]: { backend_env: c.backend_env } } });
    const run = await fleet.runScript('install.ts', ['--host', DROPLET, '--inventory', inventory]);
    assert.equal(run.code, 1, `${c.why}: exit ${run.code}\n${run.stdout}${run.stderr}`);
    assert.match(run.stderr, c.expect, c.why);
    assert.doesNotMatch(run.stdout + run.stderr, /connect/, `${c.why}: it connected`);
  }
  const missing = await fleet.writeInventory('no-secret', settings(3600));
  const run = await fleet.runScript('install.ts', ['--host', DROPLET, '--inventory', missing, '--allow-unknown-env']);
  assert.equal(run.code, 1);
  assert.match(run.stderr, new RegExp(`dashboard_env\\.NEXT_PUBLIC_ADMIN_KEY: the environment variable ${ADMIN_KEY_VARIABLE} is not set`));
  assert.equal(await sh('test -e /opt/convex/.env && echo present || echo absent'), 'absent', 'nothing was installed');
});

test('settings reach the containers; the secret is in .env only; a second run changes nothing', async () => {
  const inventory = await fleet.writeInventory('knobs', settings(3600));
  const run = await fleet.runScript('install.ts', ['--host', DROPLET, '--inventory', inventory, '--allow-unknown-env', '--diff'], secretEnv());
  assert.equal(run.code, 0, run.stdout + run.stderr);
  const backend = await containerEnv('convex-backend');
  assert.equal(backend.get('APPLICATION_MAX_CONCURRENT_QUERIES'), '32');
  assert.equal(backend.get('DOCUMENT_RETENTION_DELAY'), '3600', 'the inventory wins over the template default');
  assert.equal(backend.get('LOG_FORMAT'), 'json');
  assert.equal(backend.get('MY_TEAM_FLAG'), 'on', '--allow-unknown-env let it through');
  assert.equal(backend.get('INSTANCE_NAME'), 'convex-self-hosted');
  assert.equal((await containerEnv('convex-dashboard')).get('NEXT_PUBLIC_ADMIN_KEY'), SECRET);
  assert.match(run.stderr + run.stdout, /NEXT_PUBLIC_ADMIN_KEY: pre-fills the admin key/, 'the warning is shown');

  assert.equal(await sh(`grep -c '^DASHBOARD_ENV_NEXT_PUBLIC_ADMIN_KEY=${SECRET}$' /opt/convex/.env`), '1');
  assert.equal(await sh('stat -c %a /opt/convex/.env'), '600');
  const composeFile = await sh('cat /opt/convex/docker-compose.yml');
  assert.ok(!composeFile.includes(SECRET), 'the secret is in the compose file');
  assert.match(composeFile, /NEXT_PUBLIC_ADMIN_KEY: \$\{DASHBOARD_ENV_NEXT_PUBLIC_ADMIN_KEY\}/);
  assert.match(run.stdout + run.stderr, /\+DASHBOARD_ENV_NEXT_PUBLIC_ADMIN_KEY=\*{8}/, 'the .env diff names the key, masked');
  assert.ok(!seen(run).includes(SECRET), 'the secret leaked into the output or the log');

  const before = [await startedAt('convex-backend'), await startedAt('convex-dashboard')];
  const again = await fleet.runScript('install.ts', ['--host', DROPLET, '--inventory', inventory, '--allow-unknown-env', '--json'], secretEnv());
  assert.equal(again.code, 0, again.stdout + again.stderr);
  const json = parseRunJson(again.stdout);
  assert.deepEqual(json.hosts[0]!.recap, { ok: json.hosts[0]!.steps.length, changed: 0, failed: 0, skipped: 0 });
  assert.deepEqual([await startedAt('convex-backend'), await startedAt('convex-dashboard')], before, 'a container was restarted');
});

test('a changed setting recreates the backend once, the diff names it, and a changed secret stays masked', async () => {
  const inventory = await fleet.writeInventory('knobs-changed', settings(7200));
  const backendBefore = await startedAt('convex-backend');
  const dashboardBefore = await startedAt('convex-dashboard');
  const NEW_SECRET = 'dash-key-e2e-rotated-42e8d0';
  const run = await fleet.runScript('install.ts', ['--host', DROPLET, '--inventory', inventory, '--allow-unknown-env', '--diff'], secretEnv(NEW_SECRET));
  assert.equal(run.code, 0, run.stdout + run.stderr);
  const out = run.stdout + run.stderr;
  assert.match(out, /-\s+DOCUMENT_RETENTION_DELAY: "?3600"?/);
  assert.match(out, /\+\s+DOCUMENT_RETENTION_DELAY: "?7200"?/);
  assert.match(out, /-DASHBOARD_ENV_NEXT_PUBLIC_ADMIN_KEY=\*{8}\n.*\+DASHBOARD_ENV_NEXT_PUBLIC_ADMIN_KEY=\*{8}/);
  assert.ok(!seen(run).includes(NEW_SECRET) && !seen(run).includes(SECRET), 'a secret leaked into the output or the log');
  assert.equal((await containerEnv('convex-backend')).get('DOCUMENT_RETENTION_DELAY'), '7200');
  assert.equal((await containerEnv('convex-dashboard')).get('NEXT_PUBLIC_ADMIN_KEY'), NEW_SECRET);
  assert.notEqual(await startedAt('convex-backend'), backendBefore);
  assert.notEqual(await startedAt('convex-dashboard'), dashboardBefore);
  const restarted = await startedAt('convex-backend');
  const again = await fleet.runScript('install.ts', ['--host', DROPLET, '--inventory', inventory, '--allow-unknown-env'], secretEnv(NEW_SECRET));
  assert.match(again.stdout, new RegExp(`${DROPLET}\\s+ok=\\d+\\s+changed=0\\s+failed=0`), again.stdout + again.stderr);
  assert.equal(await startedAt('convex-backend'), restarted, 'recreated a second time');
});
