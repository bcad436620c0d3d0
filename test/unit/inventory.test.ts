// Inventory validation is data in, message out: no host involved.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { databaseName, loadInventory, selectHosts } from '../../scripts/lib/inventory.ts';

const dir = mkdtempSync(join(tmpdir(), 'inventory-'));
let n = 0;
function load(text: string) {
  const path = join(dir, `inv${n++}.toml`);
  writeFileSync(path, text);
  return loadInventory(path);
}
function rejects(text: string, pattern: RegExp) {
  assert.throws(() => load(text), (e: Error) => pattern.test(e.message) || assert.fail(`message was: ${e.message}`));
}

const BASE = `
[defaults]
backend_image = "ghcr.io/get-convex/convex-backend:abc123"
dashboard_image = "ghcr.io/get-convex/convex-dashboard:abc123"
identity = "keys/id_ed25519"

[hosts.dev]
address = "10.0.0.1"
volume = "/mnt/dev"

[hosts.prod]
address = "10.0.0.2"
volume = "/mnt/prod"
user = "deploy"
promote_from = "dev"
  [hosts.prod.postgres]
  user = "swarm"

[groups]
all = ["dev", "prod"]
`;

test('defaults merge under each host, nested tables merge, relative paths resolve beside the inventory', () => {
  const inventory = load(BASE);
  const prod = inventory.hosts.get('prod')!;
  assert.equal(prod.user, 'deploy');
  assert.equal(prod.port, 22);
  assert.equal(prod.root, '/opt/convex');
  assert.equal(prod.instance_name, 'convex-self-hosted');
  assert.deepEqual(prod.postgres, { mode: 'local', user: 'swarm', ca_file: undefined });
  assert.equal(prod.identity, join(dir, 'keys/id_ed25519'));
  assert.equal(inventory.hosts.get('dev')!.postgres.user, 'convex');
  assert.equal(databaseName(prod), 'convex_self_hosted');
});

test('hosts are selected by name, list or group; an unknown one lists the known ones', () => {
  const inventory = load(BASE);
  assert.deepEqual(selectHosts(inventory, 'all').map(h => h.name), ['dev', 'prod']);
  assert.deepEqual(selectHosts(inventory, 'prod,dev').map(h => h.name), ['prod', 'dev']);
  assert.throws(() => selectHosts(inventory, 'staging'), /unknown host "staging".*Known hosts: dev, prod; groups: all/);
  assert.throws(() => selectHosts(inventory, undefined), /--host is required/);
});

test('unparsable TOML names the line and column', () => {
  rejects(`${BASE}\n[hosts.x]\naddress = = 1\n`, /inv\d+\.toml:\d+:\d+: invalid TOML/);
});

test('an unknown key is named, with the closest known key', () => {
  rejects(BASE.replace('volume = "/mnt/dev"', 'volume = "/mnt/dev"\nbackend_imgae = "x:1"'), /hosts\.dev\.backend_imgae: unknown key\. Did you mean "backend_image"\?/);
  rejects(BASE.replace('user = "swarm"', 'usr = "swarm"'), /hosts\.prod\.postgres\.usr: unknown key\. Did you mean "user"\?/);
  rejects(`${BASE}\n[hostz.a]\n`, /hostz: unknown key\. Did you mean "hosts"\?/);
});

test('missing required keys, bad instance names, bad images and bad URLs are refused with the fix', () => {
  rejects(BASE.replace('volume = "/mnt/dev"', ''), /hosts\.dev\.volume: required key is missing/);
  rejects(BASE.replace('volume = "/mnt/dev"', 'volume = "/mnt/dev"\ninstance_name = "My_App"'), /"My_App" cannot become a PostgreSQL database name.*lowercase/);
  rejects(BASE.replace('abc123"\ndashboard', 'abc123 "\ndashboard'), /backend_image.*must name an image with a tag or digest/);
  rejects(BASE.replace('volume = "/mnt/dev"', 'volume = "mnt/dev"'), /hosts\.dev\.volume: "mnt\/dev" must be an absolute path/);
  rejects(BASE.replace('promote_from = "dev"', 'promote_from = "stage"'), /promote_from: "stage" is not a host/);
  const external = (url: string) => BASE.replace('user = "swarm"', `user = "swarm"\nmode = "external"\nurl = "${url}"\npassword_env = "PG_PW"`);
  rejects(external('postgresql://db:5432/swarmdb'), /contains a database name \("\/swarmdb"\); Convex refuses it with "cluster url already contains db name: \/swarmdb"/);
  rejects(external('postgresql://u:pw@db:5432'), /must not contain a password/);
  rejects(BASE.replace('volume = "/mnt/dev"', 'volume = "/mnt/dev"\n[hosts.dev.domains]\napi = "api.example.com"'), /domains\.site: required when \[domains\] is set[\s\S]*acme\.email: required/);
});

test(':latest is accepted with a warning; domains force the ports onto loopback', () => {
  const inventory = load(
    BASE.replace('abc123"\ndashboard', 'latest"\ndashboard').replace(
      'volume = "/mnt/dev"',
      'volume = "/mnt/dev"\n[hosts.dev.domains]\napi = "api.example.com"\nsite = "example.com"\ndashboard = "dash.example.com"\n[hosts.dev.acme]\nemail = "ops@example.com"\ndirectory = "staging"',
    ),
  );
  assert.match(inventory.warnings[0]!, /backend_image: ":latest" moves without notice/);
  const dev = inventory.hosts.get('dev')!;
  assert.equal(dev.bind_address, '127.0.0.1');
  assert.equal(dev.acme.directory, 'https://acme-staging-v02.api.letsencrypt.org/directory');
});

test('firewall = true puts the ports on loopback too; another bind_address is named in a warning', () => {
  const inventory = load(BASE.replace('volume = "/mnt/dev"', 'volume = "/mnt/dev"\nfirewall = true').replace('volume = "/mnt/prod"', 'volume = "/mnt/prod"\nfirewall = true\nbind_address = "10.0.0.2"'));
  assert.equal(inventory.hosts.get('dev')!.bind_address, '127.0.0.1');
  assert.equal(inventory.hosts.get('prod')!.bind_address, '127.0.0.1');
  assert.deepEqual(inventory.warnings, ['hosts.prod.bind_address: 10.0.0.2 is not used: with firewall = true ports 3210, 3211 and 6791 are published on 127.0.0.1 only (reach them through an SSH tunnel).']);
  assert.equal(load(BASE).hosts.get('dev')!.bind_address, '0.0.0.0', 'without a firewall the default stays');
});

test('the shipped inventory.toml is valid', () => {
  const inventory = loadInventory(new URL('../../inventory.toml', import.meta.url).pathname);
  assert.deepEqual([...inventory.hosts.keys()].sort(), ['dev', 'prod']);
});

/** BASE with lines added to [hosts.dev]. */
const devWith = (lines: string) => BASE.replace('volume = "/mnt/dev"', `volume = "/mnt/dev"\n${lines}`);
const external = (url: string) => devWith(`[hosts.dev.postgres]\nmode = "external"\nurl = ${JSON.stringify(url)}\npassword_env = "PG_PW"`);

// Each bad inventory fails at load, before anything connects, with the key's path and the fix.
const BAD: Array<{ why: string; toml: string; key: string; fix: RegExp }> = [
  // The two exploits of issue 14: a cron line through acme.directory, a command through a host name.
  { why: 'newline and cron line in acme.directory', toml: devWith('[hosts.dev.acme]\ndirectory = "https://acme.example/dir\\n* * * * * root touch /tmp/pwn #"\nca_bundle = "ca.pem"'), key: 'hosts.dev.acme.directory', fix: /contains a control character.*Remove it/ },
  { why: 'newline and command in a host name', toml: `${BASE}\n[hosts."h\\ntouch /tmp/pwn #"]\naddress = "10.0.0.9"\nvolume = "/mnt/h"\n`, key: 'hosts."h\\ntouch /tmp/pwn #"', fix: /the key contains a control character.*Remove it/ },
  { why: 'tab in a value', toml: devWith('root = "/opt/\\tconvex"'), key: 'hosts.dev.root', fix: /control character.*Remove it/ },
  { why: 'carriage return in [defaults]', toml: BASE.replace('identity = ', 'user = "root\\r"\nidentity = '), key: 'defaults.user', fix: /control character.*Remove it/ },
  { why: 'bell in a list item', toml: devWith('dashboard_allow = ["10.0.0.0/8\\u0007"]'), key: 'hosts.dev.dashboard_allow[0]', fix: /control character.*Remove it/ },
  { why: 'host name escaping .secrets/', toml: `${BASE}\n[hosts."../../x"]\naddress = "10.0.0.9"\nvolume = "/mnt/x"\n`, key: 'hosts."../../x"', fix: /is not a host name\. Use letters, digits, "-" and "_"/ },
  { why: 'host name with a space', toml: `${BASE}\n[hosts."web 1"]\naddress = "10.0.0.9"\nvolume = "/mnt/x"\n`, key: 'hosts."web 1"', fix: /is not a host name\. Use letters/ },
  { why: 'host name starting with "-"', toml: `${BASE}\n[hosts.-web]\naddress = "10.0.0.9"\nvolume = "/mnt/x"\n`, key: 'hosts."-web"', fix: /is not a host name\. Use letters/ },
  { why: 'group name with a semicolon', toml: BASE.replace('all = ["dev", "prod"]', '"all;id" = ["dev"]'), key: 'groups."all;id"', fix: /is not a group name\. Use letters/ },
  { why: 'plain http ACME directory', toml: devWith('[hosts.dev.acme]\ndirectory = "http://acme.example/dir"'), key: 'hosts.dev.acme.directory', fix: /neither "production", "staging" nor an https:\/\/ ACME directory URL.*e\.g\. "https:/ },
  { why: 'ACME directory with spaces', toml: devWith('[hosts.dev.acme]\ndirectory = "https://acme.example/dir --server x"'), key: 'hosts.dev.acme.directory', fix: /no spaces.*e\.g\. "https:/ },
  { why: 'ACME directory with a user and password', toml: devWith('[hosts.dev.acme]\ndirectory = "https://u:p@acme.example/dir"'), key: 'hosts.dev.acme.directory', fix: /no user or password/ },
  { why: 'ACME e-mail with a display name', toml: devWith('[hosts.dev.acme]\nemail = "Ops <ops@example.com>"'), key: 'hosts.dev.acme.email', fix: /not a plain e-mail address\. Write only the address/ },
  { why: 'ACME e-mail with an option', toml: devWith('[hosts.dev.acme]\nemail = "ops@example.com --agree-tos"'), key: 'hosts.dev.acme.email', fix: /not a plain e-mail address/ },
  { why: 'postgres.url with sslmode=disable', toml: external('postgresql://db.example.com:25060?sslmode=disable'), key: 'hosts.dev.postgres.url', fix: /sslmode="disable" would allow an unverified or plain-text connection\. Use sslmode=verify-full/ },
  { why: 'postgres.url with sslmode=prefer', toml: external('postgresql://db.example.com:25060?sslmode=prefer'), key: 'hosts.dev.postgres.url', fix: /sslmode="prefer" would allow.*Use sslmode=verify-full/ },
  { why: 'postgres.url with sslmode=allow', toml: external('postgresql://db.example.com:25060?sslmode=allow'), key: 'hosts.dev.postgres.url', fix: /sslmode="allow" would allow/ },
  { why: 'postgres.url with an unknown parameter', toml: external('postgresql://db.example.com:25060?host=/tmp'), key: 'hosts.dev.postgres.url', fix: /the parameter "host" is not supported\. Use only sslmode, connect_timeout/ },
  { why: 'postgres.url with a bad parameter value', toml: external('postgresql://db.example.com:25060?connect_timeout=ten'), key: 'hosts.dev.postgres.url', fix: /connect_timeout="ten" is not a valid value.*Fix or remove it/ },
  { why: 'postgres.url with a fragment', toml: external('postgresql://db.example.com:25060#x'), key: 'hosts.dev.postgres.url', fix: /must not contain "#"; remove it/ },
  { why: 'postgres.url of another scheme', toml: external('mysql://db.example.com:3306'), key: 'hosts.dev.postgres.url', fix: /must start with postgresql:\/\// },
  { why: 'postgres.url that does not parse', toml: external('postgresql://db.example.com:port'), key: 'hosts.dev.postgres.url', fix: /is not a URL, e\.g\. "postgresql:/ },
  { why: 'bind_address with a port', toml: devWith('bind_address = "0.0.0.0:3210"'), key: 'hosts.dev.bind_address', fix: /is not an IP address\. Use one of the droplet's addresses/ },
  { why: 'bind_address as a name', toml: devWith('bind_address = "localhost"'), key: 'hosts.dev.bind_address', fix: /is not an IP address/ },
  { why: 'volume with ..', toml: BASE.replace('volume = "/mnt/dev"', 'volume = "/mnt/../etc"'), key: 'hosts.dev.volume', fix: /no empty, "\." or "\.\." parts.*e\.g\. "\/mnt\/convex_data"/ },
  { why: 'volume with an empty part', toml: BASE.replace('volume = "/mnt/dev"', 'volume = "/mnt//dev"'), key: 'hosts.dev.volume', fix: /no empty, "\." or "\.\." parts/ },
  { why: 'volume with a . part', toml: BASE.replace('volume = "/mnt/dev"', 'volume = "/mnt/./dev"'), key: 'hosts.dev.volume', fix: /no empty, "\." or "\.\." parts/ },
  { why: 'volume with a command substitution', toml: BASE.replace('volume = "/mnt/dev"', 'volume = "/mnt/$(id)"'), key: 'hosts.dev.volume', fix: /made of letters, digits/ },
  { why: 'root that smuggles a libpq setting', toml: devWith('root = "/opt/x sslmode=disable"'), key: 'hosts.dev.root', fix: /made of letters, digits.*e\.g\. "\/mnt\/convex_data"/ },
  { why: 'relative root', toml: devWith('root = "opt/convex"'), key: 'hosts.dev.root', fix: /must be an absolute path/ },
  { why: 'root /', toml: devWith('root = "/"'), key: 'hosts.dev.root', fix: /must be an absolute path below \// },
];

test(`${BAD.length} bad inventories are refused at load, each naming the key and the fix, never echoing a control character`, () => {
  assert.ok(BAD.length >= 25);
  for (const bad of BAD) {
    assert.throws(() => load(bad.toml), (e: Error) => {
      assert.ok(e.message.includes(`${bad.key}: `), `${bad.why}: the message does not name ${bad.key}: ${e.message}`);
      assert.match(e.message, bad.fix, bad.why);
      assert.doesNotMatch(e.message.replace(/\n {2}- /g, ' '), /\p{Cc}/u, `${bad.why}: a control character in the message`);
      return true;
    }, bad.why);
  }
});

test('a postgres.url that is refused is shown without its user and password', () => {
  assert.throws(() => load(external('postgresql://convex:s3cr%2Ft@db.example.com:port')), (e: Error) => !e.message.includes('s3cr') && /"postgresql:\/\/…@db\.example\.com:port" is not a URL/.test(e.message));
});

test('sslmode=require or verify-full and the few known parameters are accepted', () => {
  const inventory = load(external('postgresql://db.example.com:25060?sslmode=verify-full&connect_timeout=10&application_name=convex'));
  assert.equal(inventory.hosts.get('dev')!.postgres.url, 'postgresql://db.example.com:25060?sslmode=verify-full&connect_timeout=10&application_name=convex');
  load(external('postgresql://db.example.com:25060?sslmode=require'));
});

test('a dashboard open to every address loads, with a warning per host that it is public', () => {
  const inventory = load(BASE.replace('identity = ', 'dashboard_allow = ["0.0.0.0/0", "::/0"]\nidentity = '));
  const warnings = inventory.warnings.filter(w => /dashboard is public/.test(w));
  assert.deepEqual(warnings.map(w => w.split(':')[0]), ['hosts.dev.dashboard_allow', 'hosts.prod.dashboard_allow']);
  assert.match(warnings[0]!, /"0\.0\.0\.0\/0" and "::\/0" allow every address, so the dashboard is public\. List only the networks/);
});
