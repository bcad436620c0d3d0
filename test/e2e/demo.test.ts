// npm run demo end to end (issue 9), as a newcomer runs it: the demo comes up and ends with a
// working https backend; the curl line it prints, pasted into a shell elsewhere, returns the
// backend's version; a second demo changes nothing; `npm run demo -- down` leaves no container,
// network or volume behind. The demo runs under its own fleet name, so a user's demo stays.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { isAbsolute, join } from 'node:path';
import { fleetDown } from '../fleet/index.ts';
import { dockerOut, run } from '../fleet/proc.ts';
import { FLEET_LABEL, repoRoot } from '../fleet/paths.ts';

const NAME = 'demotest';
const LONG = { timeout: 50 * 60_000 };

async function demo(args: string[] = []): Promise<{ code: number; out: string }> {
  const result = await run('npm', ['run', '--silent', 'demo', ...(args.length ? ['--', ...args] : [])], {
    cwd: repoRoot,
    env: { ...process.env, CONVEX_OPS_DEMO_FLEET: NAME, NO_COLOR: '1' },
    allowFail: true,
  });
  return { code: result.code, out: result.stdout + result.stderr };
}

const left = (kind: 'ps --all' | 'network ls' | 'volume ls') => dockerOut([...kind.split(' '), '--quiet', '--filter', `label=${FLEET_LABEL}=${NAME}`]);

before(() => fleetDown(NAME));
after(() => fleetDown(NAME));

test('npm run demo ends with a working https backend, and its curl line returns the version', LONG, async () => {
  const first = await demo();
  assert.equal(first.code, 0, first.out);
  assert.match(first.out, /The demo droplet "dev" runs Convex behind HTTPS\./);
  assert.match(first.out, /^dev\s+ok=\d+\s+changed=[1-9]\d*\s+failed=0/m, first.out);

  const curl = first.out.match(/^\s*(curl --resolve api\.dev\.test:443:\S+ --cacert (\S+) https:\/\/api\.dev\.test\/version)$/m);
  assert.ok(curl, `no curl line in:\n${first.out}`);
  assert.ok(isAbsolute(curl[2]!), 'the CA file is named by an absolute path');
  // Pasted into a shell in another directory, as a user would.
  const version = (await run('sh', ['-c', curl[1]!], { cwd: tmpdir() })).stdout.trim();
  const inside = await dockerOut(['exec', `cxo-${NAME}-dev`, 'curl', '-fsS', 'http://127.0.0.1:3210/version']);
  assert.ok(version.length > 0, 'the backend answered an empty version');
  assert.equal(version, inside, 'https through nginx answers what the backend itself answers');

  const secrets = first.out.match(/^Admin key and URL for the Convex CLI: (\S+)$/m);
  assert.ok(secrets, first.out);
  const env = readFileSync(join(repoRoot, secrets[1]!), 'utf8');
  assert.match(env, /^CONVEX_SELF_HOSTED_URL='https:\/\/api\.dev\.test'$/m);
  assert.match(env, /^CONVEX_SELF_HOSTED_ADMIN_KEY='convex-self-hosted\|[0-9a-f]+'$/m);
  const inventory = first.out.match(/^Inventory: (\S+)$/m);
  assert.ok(inventory && existsSync(join(repoRoot, inventory[1]!)), first.out);
  for (const line of ['scripts/nginx.ts --host dev --inventory', '--check', 'npm run demo -- down']) assert.ok(first.out.includes(line), `the demo does not print "${line}"`);
});

test('a second npm run demo reuses the fleet and changes nothing', LONG, async () => {
  const again = await demo();
  assert.equal(again.code, 0, again.out);
  assert.match(again.out, /^dev\s+ok=\d+\s+changed=0\s+failed=0/m, again.out);
});

test('npm run demo -- down leaves no container, network or volume behind', LONG, async () => {
  assert.notEqual(await left('ps --all'), '', 'the demo fleet was not up before down');
  const down = await demo(['down']);
  assert.equal(down.code, 0, down.out);
  assert.equal(await left('ps --all'), '', 'containers left');
  assert.equal(await left('network ls'), '', 'networks left');
  assert.equal(await left('volume ls'), '', 'volumes left');
});
