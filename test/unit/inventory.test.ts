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
