// A password never appears in what the tool prints, in any of the forms it takes: as is, in
// POSTGRES_URL's userinfo (percent-encoded, upper or lower case hex), in JSON (escaped quotes
// and backslashes), and when it is short.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Host } from '../../scripts/lib/inventory.ts';
import { redact, registerSecret } from '../../scripts/lib/redact.ts';
import { maskedEnvDiff, unifiedDiff } from '../../scripts/lib/files.ts';
import { postgresUrl } from '../../scripts/lib/steps/secret.ts';

const host: Host = {
  name: 'dev', address: '10.0.0.1', port: 22, user: 'root', known_hosts: '/k', volume: '/mnt/v', root: '/opt/convex',
  instance_name: 'convex-self-hosted', backend_image: 'r/convex-backend:1', dashboard_image: 'r/convex-dashboard:1', bind_address: '0.0.0.0',
  dashboard_allow: [], firewall: false, acme: { directory: 'https://acme' }, postgres: { mode: 'external', user: 'convex', url: 'postgresql://db.example.com:25060', password_env: 'PG_PW' }, backup: { keep: 3 },
};

const PASSWORD = `Pa55:w/o"rd\\%é!(x)`;
const SHORT = 'k9!';

/** Every spelling of a secret that output may contain. */
function forms(secret: string): string[] {
  const upper = encodeURIComponent(secret);
  const userinfo = new URL(postgresUrl(host, secret)).password;
  return [secret, upper, lowerHex(upper), userinfo, lowerHex(userinfo), jsonEscaped(secret), jsonEscaped(jsonEscaped(secret))];
}
const lowerHex = (encoded: string) => encoded.replace(/%[0-9A-F]{2}/g, escape => escape.toLowerCase());
const jsonEscaped = (text: string) => JSON.stringify(text).slice(1, -1);

/** A form is leaked if it or the characters that identify the secret survive masking. */
function assertMasked(output: string, secret: string, where: string): void {
  for (const form of forms(secret)) assert.ok(!output.includes(form), `${where}: ${JSON.stringify(form)} is in ${JSON.stringify(output)}`);
}

test('redact() masks a password as is, URL-encoded in upper and lower case, and JSON-escaped', () => {
  registerSecret(PASSWORD);
  for (const form of forms(PASSWORD)) {
    const line = `before ${form} after`;
    assert.equal(redact(line), 'before ******** after', JSON.stringify(form));
  }
  const url = postgresUrl(host, PASSWORD);
  assert.equal(redact(`POSTGRES_URL=${url}`), 'POSTGRES_URL=postgresql://convex:********@db.example.com:25060');
  const document = JSON.stringify({ detail: `cannot connect with ${url}`, env: { POSTGRES_PASSWORD: PASSWORD } }, null, 2);
  assertMasked(redact(document), PASSWORD, 'JSON document');
  assertMasked(redact(JSON.stringify({ nested: document })), PASSWORD, 'JSON in JSON');
});

test('a short secret is masked wherever it stands as a value, and not inside other words', () => {
  registerSecret(SHORT);
  for (const form of forms(SHORT)) {
    for (const line of [`PASSWORD=${form}`, `postgresql://convex:${form}@db:5432`, `{"password":"${form}"}`, `"${form}"`, form]) {
      assertMasked(redact(line), SHORT, line);
    }
  }
  assert.equal(redact('k9!x stays, and so does xk9!'), 'k9!x stays, and so does xk9!');
});

test('text without escapes (searched literally) and text with them (the full expression) mask the same', () => {
  const hex = 'a1b2c3d4e5f60718293a4b5c6d7e8f90';
  registerSecret(hex);
  registerSecret(SHORT);
  assert.equal(redact(`INSTANCE_SECRET=${hex} ok`), 'INSTANCE_SECRET=******** ok');
  assert.equal(redact(`INSTANCE_SECRET=${hex} 100%25 \\ ok`), 'INSTANCE_SECRET=******** 100%25 \\ ok');
  assert.equal(redact(`${SHORT} x${SHORT} ${SHORT}y (${SHORT})`), `******** x${SHORT} ${SHORT}y (********)`);
  assert.equal(redact(`${SHORT} x${SHORT} ${SHORT}y (${SHORT}) %25`), `******** x${SHORT} ${SHORT}y (********) %25`);
});

test('diffs of any file are masked: .env values always, other files wherever a secret shows', () => {
  registerSecret(PASSWORD);
  const env = maskedEnvDiff('/opt/convex/.env', '', `POSTGRES_PASSWORD=${PASSWORD}\n`);
  assertMasked(env, PASSWORD, '.env diff');
  const compose = redact(unifiedDiff('/opt/convex/docker-compose.yml', '', `      - POSTGRES_URL=${postgresUrl(host, PASSWORD)}\n`));
  assertMasked(compose, PASSWORD, 'compose diff');
});

test('an invalid postgres.url is refused by the scripts without echoing its password', () => {
  const dir = mkdtempSync(join(tmpdir(), 'masking-'));
  const inventory = join(dir, 'inventory.toml');
  for (const url of [`postgresql://convex:${encodeURIComponent(PASSWORD)}@db.example.com:port`, `postgresql://convex:${lowerHex(encodeURIComponent(PASSWORD))}@db.example.com:5432/db`]) {
    writeFileSync(
      inventory,
      `[hosts.dev]\naddress = "10.0.0.1"\nvolume = "/mnt/dev"\nbackend_image = "r/convex-backend:1"\ndashboard_image = "r/convex-dashboard:1"\n` +
        `[hosts.dev.postgres]\nmode = "external"\nurl = ${JSON.stringify(url)}\npassword_env = "PG_PW"\n`,
    );
    const run = spawnSync(process.execPath, ['--import', 'tsx', 'scripts/install.ts', '--host', 'dev', '--inventory', inventory, '--json'], {
      encoding: 'utf8',
      cwd: new URL('../..', import.meta.url).pathname,
      env: { ...process.env, PG_PW: PASSWORD },
    });
    assert.equal(run.status, 1, run.stderr);
    assert.match(run.stderr, /^error: [\s\S]*hosts\.dev\.postgres\.url: /);
    assertMasked(run.stdout + run.stderr, PASSWORD, url);
  }
});
