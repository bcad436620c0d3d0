// Promotion and backup helpers as data: the inventory pin edit, digest choice, and the rendered
// backup script. No host involved.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import TOML from '@iarna/toml';
import type { Host } from '../../scripts/lib/inventory.ts';
import { pinHostImages, withPinnedImages } from '../../scripts/lib/promotion/inventory-pin.ts';
import { digestRefOf, repositoryOf } from '../../scripts/lib/steps/promotion.ts';
import type { RunningImage } from '../../scripts/lib/steps/promotion.ts';
import { renderBackupScript } from '../../scripts/lib/steps/backup.ts';

const DIGEST = (c: string) => `sha256:${c.repeat(64)}`;
const pins = { backend_image: `r.example/convex-backend@${DIGEST('a')}`, dashboard_image: `r.example/convex-dashboard@${DIGEST('b')}` };
const COMMENT = '# promoted from dev (v2) on 2026-11-29T12:00:00Z by all.ts --promote';

const INVENTORY = `# my fleet
[defaults]
volume = "/mnt/v"
backend_image = "r.example/convex-backend:v1" # pinned by hand
dashboard_image = "r.example/convex-dashboard:v1"

  [defaults.acme]
  email = "ops@example.com"

[hosts.dev]
address = "10.0.0.1"

[hosts.prod]
address = "10.0.0.2"
# all.ts --promote prod takes the images proven on dev
promote_from = "dev"

  [hosts.prod.domains]
  api = "api.example.com"
  site = "example.com"
  dashboard = "dashboard.example.com"

[groups]
all = ["dev", "prod"]
`;

test('pinning inserts the images into the host table, before its sub-tables, keeping everything else', () => {
  const edited = withPinnedImages(INVENTORY, 'prod', pins, COMMENT);
  assert.equal(typeof edited, 'string');
  const text = edited as string;
  assert.ok(text.includes(`promote_from = "dev"\n${COMMENT}\nbackend_image = "${pins.backend_image}"\ndashboard_image = "${pins.dashboard_image}"\n\n  [hosts.prod.domains]`), text);
  assert.ok(text.includes('backend_image = "r.example/convex-backend:v1" # pinned by hand'), 'defaults are untouched');
  const parsed = TOML.parse(text) as any;
  assert.equal(parsed.hosts.prod.backend_image, pins.backend_image);
  assert.equal(parsed.hosts.dev.backend_image, undefined);
  assert.equal(parsed.hosts.prod.domains.api, 'api.example.com');

  // A second promotion replaces the values and their comment instead of piling up lines.
  const next = { backend_image: `r.example/convex-backend@${DIGEST('c')}`, dashboard_image: `r.example/convex-dashboard@${DIGEST('d')}` };
  const again = withPinnedImages(text, 'prod', next, COMMENT.replace('v2', 'v3')) as string;
  assert.equal(again.split('\n').length, text.split('\n').length);
  assert.equal((TOML.parse(again) as any).hosts.prod.dashboard_image, next.dashboard_image);
  assert.equal(again.split('promoted from dev (v3)').length, 2);
  assert.ok(!again.includes('(v2)'), 'the old comment is replaced');
});

test('pinning refuses layouts it cannot edit safely', () => {
  assert.deepEqual(withPinnedImages('[hosts]\nprod = { address = "x" }\n', 'prod', pins, COMMENT), { reason: 'there is no [hosts.prod] table header to edit' });
});

test('pinHostImages proves the edit by reloading the inventory, then replaces the file', () => {
  const dir = mkdtempSync(join(tmpdir(), 'convex-ops-pin-'));
  const path = join(dir, 'inventory.toml');
  writeFileSync(path, INVENTORY.replace('[hosts.prod]', '[hosts.prod]\nidentity = "~/.ssh/id_ed25519"'));
  const result = pinHostImages(path, 'prod', pins, COMMENT);
  assert.ok(result.ok, JSON.stringify(result));
  assert.match(result.diff, /^\+backend_image = "r\.example\/convex-backend@sha256:a{64}"$/m);
  assert.equal((TOML.parse(readFileSync(path, 'utf8')) as any).hosts.prod.backend_image, pins.backend_image);

  // A file that does not load is left alone, and the lines to add are given instead.
  writeFileSync(path, INVENTORY.replace('address = "10.0.0.1"', 'address = 10'));
  const failed = pinHostImages(path, 'prod', pins, COMMENT);
  assert.equal(failed.ok, false);
  assert.ok(!failed.ok && failed.lines.includes(`backend_image = "${pins.backend_image}"`));
  assert.ok(readFileSync(path, 'utf8').includes('address = 10'));
});

test('the digest pinned is the running image\'s, in the repository it came from', () => {
  assert.equal(repositoryOf('registry.test:5000/convex-backend:v2'), 'registry.test:5000/convex-backend');
  assert.equal(repositoryOf(`ghcr.io/get-convex/convex-backend@${DIGEST('a')}`), 'ghcr.io/get-convex/convex-backend');
  assert.equal(repositoryOf('localhost:5000/x'), 'localhost:5000/x');
  const image: RunningImage = {
    container: 'convex-backend', id: 'c', status: 'running', startedAt: '', ref: 'registry.test:5000/convex-backend:v2', imageId: 'sha256:1', version: 'v2', revision: '',
    repoDigests: [`mirror.example/convex-backend@${DIGEST('e')}`, `registry.test:5000/convex-backend@${DIGEST('f')}`],
  };
  assert.equal(digestRefOf(image), `registry.test:5000/convex-backend@${DIGEST('f')}`);
  assert.equal(digestRefOf({ ...image, repoDigests: [] }), undefined, 'an image never pulled from a registry has no digest to promote');
});

test('the backup script is rendered with quoted settings and is valid sh', () => {
  const host = {
    name: 'prod', address: '10.0.0.2', port: 22, user: 'root', known_hosts: '/k', volume: '/mnt/my volume', root: '/opt/convex',
    instance_name: 'swarm-prod', backend_image: 'r/b:1', dashboard_image: 'r/d:1', bind_address: '0.0.0.0', dashboard_allow: [], firewall: false,
    acme: { directory: 'https://acme' }, postgres: { mode: 'local', user: 'convex' }, backup: { keep: 3 },
  } satisfies Host;
  const script = renderBackupScript(host);
  assert.match(script, /^#!\/bin\/sh\n# Managed by convex-ops/);
  assert.doesNotMatch(script, /@[A-Z_]+@/);
  assert.match(script, /^VOLUME='\/mnt\/my volume'$/m);
  assert.match(script, /^DATABASE=swarm_prod$/m);
  assert.match(script, /^KEEP=3$/m);
  assert.match(script, /^PG_CONNINFO=''$/m);
  execFileSync('sh', ['-n', '-c', script]);
  const external = renderBackupScript({ ...host, postgres: { mode: 'external', user: 'convex', url: 'postgresql://db.example.com:25060', password_env: 'X' } });
  assert.match(external, /^PG_CONNINFO='host='\\''db\.example\.com'\\'' port='\\''25060'\\'' .*sslmode='\\''verify-full'\\'' sslrootcert='\\''\/etc\/ssl\/certs\/ca-certificates\.crt'\\''/m);
});

test('the backup script decodes percent-encoded passwords without printf \\x', () => {
  const script = renderBackupScript({
    name: 'p', address: 'a', port: 22, user: 'root', known_hosts: '/k', volume: '/v', root: '/r', instance_name: 'x', backend_image: 'r/b:1', dashboard_image: 'r/d:1',
    bind_address: '0.0.0.0', dashboard_allow: [], firewall: false, acme: { directory: 'https://acme' }, postgres: { mode: 'local', user: 'convex' }, backup: { keep: 1 },
  });
  const functions = script.slice(script.indexOf('urldecode() {'), script.indexOf('# External mode'));
  const shell = ['dash', 'sh'].find(s => { try { execFileSync('sh', ['-c', `command -v ${s}`]); return true; } catch { return false; } })!;
  const out = execFileSync(shell, ['-c', `${functions}\nurldecode "$1"`, 'x', 'p%40ss%3Aw%2Frd%2525%23%3F%26%3Dx%5C%27'], { encoding: 'utf8' });
  assert.equal(out, "p@ss:w/rd%25#?&=x\\'");
});
