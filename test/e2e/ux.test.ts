// Operator experience end to end (issue 6): the dry run on a fresh droplet and on a converged
// one, a hand-edited managed file, --json against the recap, several hosts at once, errors with
// the remote stderr redacted, and SSH: unknown and changed host keys, hashed known_hosts, an
// encrypted identity whose passphrase comes from the environment, ssh-agent. Every product
// action is `npx zx scripts/<script>.ts …` as a user runs it; fleet.exec only looks or breaks.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { useFleet } from '../fleet/index.ts';
import type { Fleet, RunResult } from '../fleet/index.ts';
import { repoRoot } from '../fleet/paths.ts';
import { fingerprint } from '../../scripts/lib/known-hosts.ts';

const fleet: Fleet = await useFleet({
  name: 'ux1',
  droplets: [
    { name: 'dev', user: 'root', domains: true },
    { name: 'fresh', user: 'root' },
  ],
});

const LONG = { timeout: 25 * 60_000 };
// The first install on a loaded shared machine can take far longer than later runs.
const INSTALL = { timeout: 50 * 60_000 };
const INSTALL_STEPS = ['directories', 'docker', 'secret', 'postgres', 'compose', 'up', 'admin-key'];
/** Everything the scripts printed in this file, to look for secrets at the end. */
const printed: string[] = [];

async function run(script: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<RunResult> {
  const result = await fleet.runScript(script, args, env);
  printed.push(result.stdout, result.stderr);
  return result;
}
const out = (r: RunResult) => `exit ${r.code}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;
const sh = async (droplet: string, cmd: string) => (await fleet.exec(droplet, cmd)).stdout.trim();

/**
 * What "installs nothing, changes nothing" is judged by: every package with its version and
 * state, and every file, link and folder (with mtime, size and mode) where the scripts write.
 */
async function snapshot(droplet: string): Promise<string[]> {
  const listing = await sh(
    droplet,
    "dpkg-query -W -f='pkg ${Package} ${Version} ${db:Status-Status}\\n'; " +
      'find /etc /opt /mnt /var/lib /usr/local /root -printf "%p %y %T@ %s %m\\n" 2>/dev/null; ' +
      'command -v docker psql nginx certbot 2>/dev/null | sed "s/^/bin /"',
  );
  return listing.split('\n').sort();
}
function sameSnapshot(before: string[], after: string[]): void {
  const a = new Set(before);
  const b = new Set(after);
  const gone = before.filter(l => !b.has(l));
  const added = after.filter(l => !a.has(l));
  assert.deepEqual({ gone, added }, { gone: [], added: [] }, 'the droplet changed');
}

const fileStamp = (droplet: string, path: string) => sh(droplet, `sha256sum ${path}; stat -c '%y %s %a' ${path}`);
const startedAt = (droplet: string) => sh(droplet, "docker inspect --format '{{.Name}} {{.State.StartedAt}}' convex-backend convex-dashboard");

test('on a fresh droplet --check lists every step\'s changes, exits 2 and installs nothing', LONG, async () => {
  const before = await snapshot('fresh');
  const check = await run('install.ts', ['--host', 'fresh', '--check']);
  assert.equal(check.code, 2, out(check));
  for (const step of INSTALL_STEPS) assert.match(check.stdout, new RegExp(`^fresh +${step} +changed +[\\d.]+s {2}would: `, 'm'), `${step} lists its change\n${out(check)}`);
  assert.match(check.stdout, /would: install docker\.io/);
  assert.match(check.stdout, /would: install postgresql/);
  // Diffs: the compose file in full, the .env with its keys and every value masked.
  assert.match(check.stdout, /^\+ {4}image: registry\.test:5000\/convex-backend:v1$/m);
  assert.match(check.stdout, /^\+INSTANCE_SECRET=\*{8}$/m);
  assert.match(check.stdout, /^\+POSTGRES_URL=\*{8}$/m);
  assert.doesNotMatch(check.stdout, /[0-9a-f]{64}/, 'no generated secret is shown');
  assert.match(check.stdout, /^fresh +ok=2 +changed=7 +failed=0 +skipped=0/m);
  sameSnapshot(before, await snapshot('fresh'));
  assert.equal((await fleet.exec('fresh', 'command -v docker', { allowFail: true })).code, 1, 'docker was not installed');
  assert.ok(!existsSync(join(fleet.dir, '.secrets', 'fresh.env')), 'no local secrets file was written');
});

test('install, then --check on the converged host: no change, exit 0; --json parses and agrees with the recap', INSTALL, async () => {
  const install = await run('install.ts', ['--host', 'dev']);
  assert.equal(install.code, 0, out(install));
  const started = await startedAt('dev');

  const check = await run('install.ts', ['--host', 'dev', '--check']);
  assert.equal(check.code, 0, out(check));
  assert.doesNotMatch(check.stdout, / changed +[\d.]+s/, 'no step would change anything');
  const human = /^dev +ok=(\d+) +changed=0 +failed=0 +skipped=0/m.exec(check.stdout);
  assert.ok(human, out(check));

  const json = await run('install.ts', ['--host', 'dev', '--check', '--json']);
  assert.equal(json.code, 0, out(json));
  const doc = JSON.parse(json.stdout) as {
    check: boolean; exit: number; log: string;
    hosts: Array<{ host: string; steps: Array<{ step: string; status: string; seconds: number }>; recap: Record<string, number> }>;
    recap: Record<string, Record<string, number>>;
  };
  assert.equal(doc.check, true);
  assert.equal(doc.exit, 0);
  const dev = doc.hosts.find(h => h.host === 'dev')!;
  assert.deepEqual(dev.steps.map(s => s.step), ['connect', 'promotion-window', ...INSTALL_STEPS]);
  const counted = Object.fromEntries(['ok', 'changed', 'failed', 'skipped'].map(s => [s, dev.steps.filter(x => x.status === s).length]));
  assert.deepEqual(dev.recap, counted);
  assert.deepEqual(doc.recap.dev, counted);
  assert.equal(String(counted.ok), human[1], 'the JSON recap and the recap of a plain run say the same');
  // Under --json the human recap goes to stderr: the same numbers again.
  assert.match(json.stderr, new RegExp(`^dev +ok=${counted.ok} +changed=0 +failed=0 +skipped=0`, 'm'));
  assert.equal(doc.log, join(fleet.dir, '.convex-ops', 'convex-ops.log'));
  assert.equal(await startedAt('dev'), started, 'a dry run restarts nothing');
});

test('a hand-edited compose file: --check prints the diff and exits 2, the file stays as it is', LONG, async () => {
  const path = '/opt/convex/docker-compose.yml';
  await fleet.exec('dev', `sed -i 's/RUST_LOG: info/RUST_LOG: debug/' ${path} && echo '# edited by hand' >> ${path}`);
  const before = await fileStamp('dev', path);
  const started = await startedAt('dev');
  const check = await run('install.ts', ['--host', 'dev', '--check']);
  assert.equal(check.code, 2, out(check));
  assert.match(check.stdout, /^dev +compose +changed +[\d.]+s {2}would: update docker-compose\.yml$/m);
  assert.match(check.stdout, /^--- \/opt\/convex\/docker-compose\.yml\tlive$/m);
  assert.match(check.stdout, /^- {6}RUST_LOG: debug$/m);
  assert.match(check.stdout, /^\+ {6}RUST_LOG: info$/m);
  assert.match(check.stdout, /^-# edited by hand$/m);
  assert.equal(await fileStamp('dev', path), before, 'the file was not touched');
  assert.equal(await startedAt('dev'), started, 'nothing was restarted');
  // The fix is the same command without --check (compose.ts alone rewrites just this file).
  const fix = await run('compose.ts', ['--host', 'dev']);
  assert.equal(fix.code, 0, out(fix));
  assert.doesNotMatch(await sh('dev', `cat ${path}`), /edited by hand|RUST_LOG: debug/);
  assert.equal((await run('install.ts', ['--host', 'dev', '--check'])).code, 0);
});

const nginxLanded = spawnSync('git', ['ls-files', '--error-unmatch', 'scripts/nginx.ts'], { cwd: repoRoot }).status === 0;

test('a hand-edited nginx site file: --check prints the diff and exits 2, the file stays as it is', { ...LONG, skip: nginxLanded ? false : 'scripts/nginx.ts has not landed yet' }, async () => {
  const site = await run('nginx.ts', ['--host', 'dev']);
  assert.equal(site.code, 0, out(site));
  const path = '/etc/nginx/sites-available/convex-convex-self-hosted.conf';
  await fleet.exec('dev', `echo '# edited by hand' >> ${path}`);
  const before = await fileStamp('dev', path);
  const master = await sh('dev', 'cat /run/nginx.pid');
  const check = await run('nginx.ts', ['--host', 'dev', '--check']);
  assert.equal(check.code, 2, out(check));
  assert.match(check.stdout, new RegExp(`^--- ${path.replace(/\./g, '\\.')}`, 'm'));
  assert.match(check.stdout, /^-# edited by hand$/m);
  assert.equal(await fileStamp('dev', path), before, 'the file was not touched');
  assert.equal(await sh('dev', 'cat /run/nginx.pid'), master);
  const fix = await run('nginx.ts', ['--host', 'dev']);
  assert.equal(fix.code, 0, out(fix));
  assert.doesNotMatch(await sh('dev', `cat ${path}`), /edited by hand/);
});

test('with several hosts every line says which host it is about', LONG, async () => {
  const check = await run('install.ts', ['--host', 'dev,fresh', '--check']);
  assert.equal(check.code, 2, out(check));
  const lines = check.stdout.split('\n').filter(l => l.trim() && l !== 'RECAP' && !l.startsWith('log: '));
  const stray = lines.filter(l => !/^(dev|fresh) {2}/.test(l));
  assert.deepEqual(stray, [], 'lines without their host');
  assert.match(check.stdout, /^fresh {2}\| \+INSTANCE_SECRET=\*{8}$/m, 'diff lines carry the host too');
  assert.match(check.stdout, /^dev +ok=\d+ +changed=0 /m);
  assert.match(check.stdout, /^fresh +ok=2 +changed=7 /m);
});

test('an error names the host, what failed and the remote stderr, with secrets masked', LONG, async () => {
  // A docker that refuses compose and prints the instance secret on stderr, ahead of the real
  // one on the PATH the scripts use; the dashboard is stopped so that up.ts has to start it.
  const wrapper = `#!/bin/sh
case "$1" in compose|pull|start|up) echo "docker $1: boom, secret $(sed -n 's/^INSTANCE_SECRET=//p' /opt/convex/.env) rejected" >&2; exit 1;; esac
exec /usr/bin/docker "$@"
`;
  const composeV1 = `#!/bin/sh
echo "docker-compose: boom, secret $(sed -n 's/^INSTANCE_SECRET=//p' /opt/convex/.env) rejected" >&2; exit 1
`;
  await fleet.exec('dev', 'cat > /usr/local/bin/docker && chmod +x /usr/local/bin/docker', { input: wrapper });
  await fleet.exec('dev', 'cat > /usr/local/bin/docker-compose && chmod +x /usr/local/bin/docker-compose', { input: composeV1 });
  try {
    await fleet.exec('dev', '/usr/bin/docker stop convex-dashboard');
    const up = await run('up.ts', ['--host', 'dev']);
    assert.equal(up.code, 1, out(up));
    assert.match(up.stdout, /^dev +up +failed +[\d.]+s {2}dev: compose up backend failed \(exit 1\):$/m);
    assert.match(up.stdout, /^dev +docker(-compose)?( compose)?: boom, secret \*{8} rejected$/m, 'the remote stderr, redacted, on a line of its own host');
    assert.match(up.stdout, /^dev +failed at up: dev: compose up backend failed \(exit 1\):$/m, 'the recap repeats the failure');
  } finally {
    await fleet.exec('dev', 'rm -f /usr/local/bin/docker /usr/local/bin/docker-compose');
    const fixed = await run('up.ts', ['--host', 'dev']);
    assert.equal(fixed.code, 0, out(fixed));
  }
});

test('host keys: an unknown host is refused until --accept-new records it; hashed known_hosts work', LONG, async () => {
  const ip = fleet.droplets.dev!.ip;
  const empty = join(fleet.dir, 'known_hosts.empty');
  writeFileSync(empty, '');
  const inventory = await fleet.writeInventory('ux-unknown', { defaults: { known_hosts: empty } });
  const refused = await run('install.ts', ['--inventory', inventory, '--host', 'dev', '--check']);
  assert.equal(refused.code, 1, out(refused));
  assert.match(refused.stdout, new RegExp(`^dev +connect +failed .*unknown host key for dev \\(${ip.replace(/\./g, '\\.')}\\): ssh-\\S+ SHA256:\\S+ is not in .*--accept-new`, 'm'));
  assert.equal(readFileSync(empty, 'utf8'), '', 'nothing recorded without --accept-new');
  const accepted = await run('install.ts', ['--inventory', inventory, '--host', 'dev', '--check', '--accept-new']);
  assert.equal(accepted.code, 0, out(accepted));
  assert.match(readFileSync(empty, 'utf8'), new RegExp(`^${ip.replace(/\./g, '\\.')} ssh-\\S+ AAAA`, 'm'));
  assert.equal((await run('install.ts', ['--inventory', inventory, '--host', 'dev', '--check'])).code, 0, 'the recorded key is trusted next time');

  const hashed = join(fleet.dir, 'known_hosts.hashed');
  copyFileSync(fleet.knownHostsPath, hashed);
  const keygen = spawnSync('ssh-keygen', ['-H', '-f', hashed], { encoding: 'utf8' });
  assert.equal(keygen.status, 0, keygen.stderr);
  assert.ok(!readFileSync(hashed, 'utf8').includes(ip) && readFileSync(hashed, 'utf8').startsWith('|1|'), 'every entry is hashed');
  const hashedInventory = await fleet.writeInventory('ux-hashed', { defaults: { known_hosts: hashed } });
  const check = await run('install.ts', ['--inventory', hashedInventory, '--host', 'dev', '--check']);
  assert.equal(check.code, 0, out(check));
});

test('an encrypted identity with its passphrase from the environment; ssh-agent', LONG, async () => {
  const encrypted = join(fleet.dir, 'id_encrypted');
  copyFileSync(fleet.identityPath, encrypted);
  const keygen = spawnSync('ssh-keygen', ['-p', '-q', '-P', '', '-N', 'correct horse battery', '-f', encrypted], { encoding: 'utf8' });
  assert.equal(keygen.status, 0, keygen.stderr);
  assert.match(readFileSync(encrypted, 'utf8'), /BEGIN OPENSSH PRIVATE KEY/);
  const inventory = await fleet.writeInventory('ux-encrypted', { defaults: { identity: encrypted, identity_passphrase_env: 'UX_KEY_PASSPHRASE' } });
  const env = (value: string | undefined): NodeJS.ProcessEnv => ({ UX_KEY_PASSPHRASE: value, SSH_AUTH_SOCK: '' });

  const ok = await run('install.ts', ['--inventory', inventory, '--host', 'dev', '--check'], env('correct horse battery'));
  assert.equal(ok.code, 0, out(ok));
  const unset = await run('install.ts', ['--inventory', inventory, '--host', 'dev', '--check'], { ...process.env, UX_KEY_PASSPHRASE: undefined });
  assert.equal(unset.code, 1, out(unset));
  assert.match(unset.stdout, /the identity's passphrase variable UX_KEY_PASSPHRASE is not set/);
  const wrong = await run('install.ts', ['--inventory', inventory, '--host', 'dev', '--check'], env('wrong'));
  assert.equal(wrong.code, 1, out(wrong));
  assert.match(wrong.stdout, /cannot use the identity .*id_encrypted.*Check that UX_KEY_PASSPHRASE holds its passphrase/);

  // ssh-agent: no identity in the inventory, the key in an agent of our own.
  const socket = join(fleet.dir, 'agent.sock');
  rmSync(socket, { force: true });
  const agent = spawn('ssh-agent', ['-D', '-a', socket], { stdio: 'ignore' });
  try {
    for (let i = 0; i < 50 && !existsSync(socket); i++) await new Promise(resolve => setTimeout(resolve, 100));
    const add = spawnSync('ssh-add', [fleet.identityPath], { env: { ...process.env, SSH_AUTH_SOCK: socket }, encoding: 'utf8' });
    assert.equal(add.status, 0, add.stderr);
    const agentInventory = await fleet.writeInventory('ux-agent', { defaults: { identity: undefined } });
    const viaAgent = await run('install.ts', ['--inventory', agentInventory, '--host', 'dev', '--check'], { SSH_AUTH_SOCK: socket });
    assert.equal(viaAgent.code, 0, out(viaAgent));
    const noAgent = await run('install.ts', ['--inventory', agentInventory, '--host', 'dev', '--check'], { SSH_AUTH_SOCK: '' });
    assert.equal(noAgent.code, 1, out(noAgent));
    assert.match(noAgent.stdout, /no identity configured and no ssh-agent/);
  } finally {
    agent.kill();
  }
});

test('a changed host key aborts the run with both fingerprints, even with --accept-new', LONG, async () => {
  const ed25519 = (keys: string[]) => Buffer.from(keys.find(k => k.startsWith('ssh-ed25519 '))!.split(' ')[1]!, 'base64');
  const before = fingerprint(ed25519(fleet.droplets.dev!.hostKeys));
  const after = fingerprint(ed25519(await fleet.recreateHostKey('dev')));
  assert.notEqual(before, after);
  try {
    for (const extra of [[], ['--accept-new']]) {
      const check = await run('install.ts', ['--host', 'dev', '--check', ...extra]);
      assert.equal(check.code, 1, out(check));
      assert.match(check.stdout, /^dev +connect +failed .*HOST KEY CHANGED for dev/m);
      assert.ok(check.stdout.includes(`ssh-ed25519 ${before}`), `the recorded fingerprint ${before}\n${out(check)}`);
      assert.ok(check.stdout.includes(`ssh-ed25519 ${after}`), `the presented fingerprint ${after}\n${out(check)}`);
      assert.match(check.stdout, /^dev +ok=0 +changed=0 +failed=1 /m);
    }
  } finally {
    await fleet.refreshKnownHosts();
  }
  assert.equal((await run('install.ts', ['--host', 'dev', '--check'])).code, 0);
});

test('no secret of the droplet appears in anything printed or in the log', async () => {
  const env = await sh('dev', 'cat /opt/convex/.env');
  const secrets = ['INSTANCE_SECRET', 'POSTGRES_PASSWORD', 'CONVEX_ADMIN_KEY'].map(k => new RegExp(`^${k}=(.+)$`, 'm').exec(env)?.[1]);
  const log = readFileSync(join(fleet.dir, '.convex-ops', 'convex-ops.log'), 'utf8');
  assert.ok(log.includes('=== ') && log.includes('RECAP'), 'the runs were logged');
  for (const secret of secrets) {
    assert.ok(secret && secret.length >= 20);
    assert.ok(!log.includes(secret), 'a secret is in the log');
    assert.ok(!printed.some(text => text.includes(secret)), 'a secret was printed');
  }
});
