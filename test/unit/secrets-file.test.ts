// .secrets/<host>.env is sourced by the operator's shell (README: `set -a; . .secrets/dev.env`)
// and read by the Convex CLI with dotenv. Both must read back exactly what was written.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as dotenvParse } from 'dotenv';
import type { Host } from '../../scripts/lib/inventory.ts';
import { ADMIN_KEY, adminKeyInSettings, cliSettings, localSecretsFile } from '../../scripts/lib/steps/admin-key.ts';

const host: Host = {
  name: 'dev', address: '10.0.0.1', port: 22, user: 'root', known_hosts: '/k', volume: '/mnt/v', root: '/opt/convex',
  instance_name: 'convex-self-hosted', backend_image: 'r/convex-backend:1', dashboard_image: 'r/convex-dashboard:1', bind_address: '0.0.0.0',
  dashboard_allow: [], firewall: false, acme: { directory: 'https://acme' }, postgres: { mode: 'local', user: 'convex' }, backup: { keep: 3 },
};

/** A key as generate_admin_key.sh prints it (the stand-in's derivation: <instance>|HMAC hex). */
const generatedKey = (instance: string) => `${instance}|${createHmac('sha256', randomBytes(32)).update(instance).digest('hex')}`;

const dir = mkdtempSync(join(tmpdir(), 'secrets-file-'));

/** The two variables as a shell sees them after `set -a; . file`, with nothing else inherited. */
function sourced(shell: string, file: string): Record<string, string> {
  const out = execFileSync(shell, ['-c', 'set -a; . "$1"; printf "%s\\0%s" "$CONVEX_SELF_HOSTED_URL" "$CONVEX_SELF_HOSTED_ADMIN_KEY"', shell, file], {
    encoding: 'utf8',
    env: {},
  });
  const [url, key] = out.split('\0');
  return { CONVEX_SELF_HOSTED_URL: url!, CONVEX_SELF_HOSTED_ADMIN_KEY: key! };
}

test('.secrets/<host>.env with a generated key reads back exactly with bash, dash and dotenv', () => {
  for (const [label, target] of [['no domains', host], ['domains', { ...host, domains: { api: 'api.example.com', site: 'example.com', dashboard: 'dash.example.com' } }]] as const) {
    const key = generatedKey(target.instance_name);
    assert.match(key, ADMIN_KEY);
    const text = cliSettings(target, key);
    const file = join(dir, `${label.replace(/ /g, '-')}.env`);
    writeFileSync(file, text);
    const wanted = { CONVEX_SELF_HOSTED_URL: target.domains ? 'https://api.example.com' : 'http://10.0.0.1:3210', CONVEX_SELF_HOSTED_ADMIN_KEY: key };
    assert.deepEqual(sourced('/bin/bash', file), wanted, `${label}: bash`);
    assert.deepEqual(sourced('/bin/dash', file), wanted, `${label}: dash`);
    assert.deepEqual(dotenvParse(text), wanted, `${label}: dotenv, as the Convex CLI reads it`);
    assert.equal(adminKeyInSettings(text), key, `${label}: doctor reads the key back`);
  }
});

test('a key read back from the droplet is trusted only in the form <instance>|<hex>', () => {
  for (const bad of ['convex-self-hosted|abc; touch /tmp/pwn', 'convex-self-hosted|$(id)', "convex-self-hosted|ab'cd", 'convex-self-hosted|ABCD', 'convex-self-hosted|', 'convex-self-hosted|ab\ncd']) {
    assert.doesNotMatch(bad, ADMIN_KEY, bad);
  }
  assert.throws(() => cliSettings(host, "x|ab' ; touch /tmp/pwn '"), /single quote or a line break/);
});

test('the secrets file of a host is always directly inside .secrets/', () => {
  const local = (...parts: string[]) => join('/inventory-dir', ...parts);
  assert.equal(localSecretsFile(local, 'prod-eu_1'), '/inventory-dir/.secrets/prod-eu_1.env');
  for (const name of ['../../x', 'a/b', '.hidden', '', 'h\ntouch /tmp/pwn #']) {
    assert.throws(() => localSecretsFile(local, name), /is not a plain host name/, JSON.stringify(name));
  }
});
