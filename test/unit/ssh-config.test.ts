// ssh config resolution and jump hosts: config files and inventories in, connection settings,
// warnings and errors out. Only the unknown-alias cases touch the network, for a DNS lookup.
import { test } from 'node:test';
import { generateKeyPairSync } from 'node:crypto';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { SshConfig } from '../../scripts/lib/ssh-config.ts';
import { loadInventory } from '../../scripts/lib/inventory.ts';
import { Connection } from '../../scripts/lib/ssh.ts';

const dir = mkdtempSync(join(tmpdir(), 'ssh-config-'));
let n = 0;
function file(text: string, name = `config${n++}`): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}
const KEY = file(generateKeyPairSync('rsa', { modulusLength: 2048, publicKeyEncoding: { type: 'pkcs1', format: 'pem' }, privateKeyEncoding: { type: 'pkcs1', format: 'pem' } }).privateKey, 'id_test');

function inventory(hosts: string, sshConfig: string): ReturnType<typeof loadInventory> {
  return loadInventory(
    file(`[defaults]
backend_image = "r/b:1"
dashboard_image = "r/d:1"
volume = "/mnt/v"
ssh_config = ${JSON.stringify(file(sshConfig))}
${hosts}`),
  );
}

test('Host patterns: the first value obtained wins, * and ? match, a matching ! pattern excludes the block, names compare case-insensitively', () => {
  const config = new SshConfig(file(`
Host web-* !web-legacy
  User deploy
  Port 2200
Host WEB-1
  HostName 10.0.0.1
  User ignored-because-later
Host *
  User fallback
  Port 22
`));
  assert.deepEqual([config.lookup('web-1').user, config.lookup('web-1').hostName, config.lookup('web-1').port], ['deploy', '10.0.0.1', 2200]);
  assert.deepEqual([config.lookup('web-legacy').user, config.lookup('web-legacy').port], ['fallback', 22]);
  assert.equal(config.lookup('db').hostName, undefined);
});

test('IdentityFile: every one that applies, in order, with ~ and %h %r %n %% expanded; the given user is %r', () => {
  const config = new SshConfig(file(`
Host prod
  HostName 10.0.0.7
  User deploy
  IdentityFile ~/.ssh/%r@%h
  IdentityFile /keys/%n_100%%
Host *
  IdentityFile ~/.ssh/id_ed25519
`));
  assert.deepEqual(config.lookup('prod').identityFiles, [join(homedir(), '.ssh/deploy@10.0.0.7'), '/keys/prod_100%', join(homedir(), '.ssh/id_ed25519')]);
  assert.equal(config.lookup('prod', { user: 'ops' }).identityFiles[0], join(homedir(), '.ssh/ops@10.0.0.7'));
  assert.equal(config.lookup('other').identityFiles[0], join(homedir(), '.ssh/id_ed25519'));
});

test('Include: globs in sorted order, only inside a block that applies, and nothing from a missing file', () => {
  mkdirSync(join(dir, 'conf.d'), { recursive: true });
  file('Host a\n  HostName 10.0.0.1\n', 'conf.d/10-a.conf');
  file('Host a b\n  HostName 10.9.9.9\n  User from-b\n', 'conf.d/20-b.conf');
  file('User only-for-c\n', 'c-settings');
  const config = new SshConfig(file(`
Include ${join(dir, 'conf.d')}/*.conf ${join(dir, 'missing')}
Host c
  Include ${join(dir, 'c-settings')}
Host *
  User default
`));
  assert.deepEqual([config.lookup('a').hostName, config.lookup('a').user], ['10.0.0.1', 'from-b']);
  assert.equal(config.lookup('b').hostName, '10.9.9.9');
  assert.equal(config.lookup('c').user, 'only-for-c');
  assert.equal(config.lookup('d').user, 'default');
  assert.deepEqual(config.aliases().sort(), ['a', 'b', 'c']);
  const loop = file('');
  writeFileSync(loop, `Include ${loop}\n`);
  assert.throws(() => new SshConfig(loop).lookup('x'), /nested more than 16 deep/);
});

test('Match host/originalhost/user is evaluated; other criteria are refused rather than guessed', () => {
  const config = new SshConfig(file(`
Host db
  HostName db.internal
Match host *.internal user ops
  Port 2222
Match originalhost db
  IdentitiesOnly yes
`));
  assert.equal(config.lookup('db').port, undefined, 'the user is the local one unless given');
  assert.equal(config.lookup('db', { user: 'ops' }).port, 2222);
  assert.equal(config.lookup('db').identitiesOnly, true);
  assert.throws(() => new SshConfig(file('Match exec "true"\n  User x\n')).lookup('db'), /"Match exec true" uses a criterion convex-ops cannot evaluate/);
});

test('keywords that change where OpenSSH connects are reported by name; harmless values are not', () => {
  const config = new SshConfig(file(`
Host prod
  ProxyCommand ssh -W %h:%p gateway
  LocalForward 8080 localhost:80
  CanonicalizeHostname no
  ForwardAgent yes
`));
  assert.deepEqual(config.lookup('prod').ignored, ['ProxyCommand', 'LocalForward']);
});

test('precedence: inventory values win over the ssh config, the ssh config over defaults; ignored keywords warn', () => {
  const inv = inventory(
    `
[hosts.a]
address = "prod"
[hosts.b]
address = "prod"
user = "root"
port = 22
identity = "${KEY}"
known_hosts = "/inventory/known_hosts"
[hosts.c]
address = "203.0.113.9"
`,
    `Host prod
  HostName 10.0.0.7
  User deploy
  Port 2222
  IdentityFile ${join(dir, 'absent-key')}
  IdentityFile ${KEY}
  UserKnownHostsFile ~/.ssh/known_hosts_prod
  RemoteForward 9000 localhost:9000
`,
  );
  const a = inv.hosts.get('a')!;
  assert.deepEqual([a.address, a.user, a.port, a.identity, a.known_hosts], ['10.0.0.7', 'deploy', 2222, KEY, join(homedir(), '.ssh/known_hosts_prod')]);
  const b = inv.hosts.get('b')!;
  assert.deepEqual([b.address, b.user, b.port, b.identity, b.known_hosts], ['10.0.0.7', 'root', 22, KEY, '/inventory/known_hosts']);
  const c = inv.hosts.get('c')!;
  assert.deepEqual([c.address, c.user, c.port, c.identity, c.jump], ['203.0.113.9', 'root', 22, undefined, []]);
  assert.equal(inv.warnings.length, 2);
  assert.match(inv.warnings[0]!, /hosts\.a: .* sets RemoteForward for prod, which convex-ops does not use/);
});

test('an IdentityFile that exists nowhere, and a missing ssh_config file, are errors naming the file', () => {
  assert.throws(() => inventory('[hosts.a]\naddress = "prod"\n', 'Host prod\n  IdentityFile /nowhere/key\n'), /hosts\.a: .* gives prod the identity \/nowhere\/key, and no such file exists/);
  assert.throws(
    () => loadInventory(file('[hosts.a]\naddress = "x"\nvolume = "/v"\nbackend_image = "r/b:1"\ndashboard_image = "r/d:1"\nssh_config = "/nowhere/config"\n')),
    /hosts\.a\.ssh_config: \/nowhere\/config does not exist/,
  );
});

test('$CONVEX_OPS_SSH_CONFIG is read when the inventory names no ssh config', () => {
  const path = file('Host prod\n  HostName 10.1.1.1\n');
  process.env.CONVEX_OPS_SSH_CONFIG = path;
  try {
    const inv = loadInventory(file('[hosts.a]\naddress = "prod"\nvolume = "/v"\nbackend_image = "r/b:1"\ndashboard_image = "r/d:1"\n'));
    assert.equal(inv.hosts.get('a')!.address, '10.1.1.1');
    assert.equal(inv.hosts.get('a')!.ssh_config, path);
  } finally {
    delete process.env.CONVEX_OPS_SSH_CONFIG;
  }
});

test('jump: user@host:port, an inventory host (with its own settings), an ssh config alias with its ProxyJump chain, or none', () => {
  const inv = inventory(
    `
[hosts.edge]
address = "198.51.100.1"
user = "ops"
port = 2201
identity = "${KEY}"
jump = "none"
[hosts.app1]
address = "10.0.0.11"
jump = "admin@192.0.2.5:2222"
[hosts.app2]
address = "10.0.0.12"
jump = "edge"
[hosts.app3]
address = "inner"
identity = "${KEY}"
`,
    `Host inner
  HostName 10.0.0.13
  ProxyJump outer,middle
Host outer
  HostName 192.0.2.1
  User jumper
Host middle
  HostName 10.0.0.2
  Port 2022
`,
  );
  const hops = (name: string) => inv.hosts.get(name)!.jump!.map(h => `${h.name}=${h.user}@${h.address}:${h.port}`);
  assert.deepEqual(hops('edge'), []);
  assert.deepEqual(hops('app1'), ['192.0.2.5=admin@192.0.2.5:2222']);
  assert.deepEqual(hops('app2'), ['edge=ops@198.51.100.1:2201']);
  assert.deepEqual(hops('app3'), ['outer=jumper@192.0.2.1:22', 'middle=root@10.0.0.2:2022']);
  // A bastion that the ssh config gives no key logs in with the host's, and checks its key in the host's known_hosts.
  assert.equal(inv.hosts.get('app3')!.jump![0]!.identity, KEY);
  assert.equal(inv.hosts.get('app2')!.jump![0]!.identity, KEY);
});

test('jump: a host that is its own bastion, a circle, and a malformed hop are errors that say what to do', () => {
  assert.throws(() => inventory('[hosts.edge]\naddress = "10.0.0.1"\njump = "edge"\n', ''), /the jump hosts go round in a circle \(edge → edge\).*jump = "none" in \[hosts\.edge\]/);
  assert.throws(() => inventory('[hosts.a]\naddress = "10.0.0.1"\njump = "b"\n[hosts.b]\naddress = "10.0.0.2"\njump = "a"\n', ''), /circle \(a → b → a\)/);
  assert.throws(() => inventory('[hosts.a]\naddress = "10.0.0.1"\njump = "root@@x"\n', ''), /hosts\.a\.jump: "root@@x" is not a jump host/);
});

test('an unknown alias, as a host or as its bastion, is a clear error naming the ssh config and its aliases', async () => {
  const inv = inventory(
    `
[hosts.a]
address = "prdo.invalid"
identity = "${KEY}"
[hosts.b]
address = "10.0.0.1"
identity = "${KEY}"
jump = "bastoin.invalid"
`,
    'Host prod bastion\n  HostName 10.0.0.7\n',
  );
  const config = inv.hosts.get('a')!.ssh_config!;
  await assert.rejects(Connection.open(inv.hosts.get('a')!, { acceptNew: false, retries: 0 }), (e: Error) => {
    assert.equal(e.message, `a: "prdo.invalid" is neither an alias in ${config} nor a name this machine can resolve. Aliases there: prod, bastion. Add "Host prdo.invalid" with its HostName to the ssh config, or give the address itself.`);
    return true;
  });
  await assert.rejects(Connection.open(inv.hosts.get('b')!, { acceptNew: false, retries: 0 }), /^Error: bastoin\.invalid: "bastoin\.invalid" is neither an alias in .* nor a name this machine can resolve/);
});

test('the local user is what Match user sees when none is given', () => {
  const config = new SshConfig(file(`Match user ${userInfo().username}\n  Port 2345\n`));
  assert.equal(config.lookup('anything').port, 2345);
});
