// Fast checks of the backend stand-in's configuration logic, run with the host's python3
// (no Docker, no PostgreSQL): the admin key's derivation, the name/secret lookup order and
// write-back, and the POSTGRES_URL refusals. The real thing is in test/e2e/standins.test.ts.
// Skipped when the host has no python3 (the stand-in itself runs in its image).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { STANDIN_DIR, standinRevision } from '../standins/build.ts';

const BACKEND = path.join(STANDIN_DIR, 'backend.py');
// The interpreter's real path, once: a version-manager shim (pyenv) costs a second a call.
const probe = spawnSync('python3', ['-c', 'import sys; assert sys.version_info >= (3, 9); print(sys.executable)'], { encoding: 'utf8' });
const python = probe.status === 0 ? probe.stdout.trim() : undefined;

/** The documented derivation: `<name>|hex(HMAC-SHA256(key = secret bytes, name))`. */
const expectedKey = (name: string, secretHex: string): string =>
  `${name}|${createHmac('sha256', Buffer.from(secretHex, 'hex')).update(name).digest('hex')}`;

describe('backend stand-in configuration (host python3)', { skip: python ? false : 'python3 (3.9+) not found' }, () => {
  let dataDir: string;
  const run = (args: string[], env: Record<string, string>) => {
    const r = spawnSync(python ?? 'python3', [BACKEND, ...args], {
      // A clean environment: only what the test gives, plus PATH.
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', CONVEX_STANDIN_DATA_DIR: dataDir, ...env },
      encoding: 'utf8',
      timeout: 20_000,
    });
    return { code: r.status, stdout: r.stdout.trim(), stderr: r.stderr.trim() };
  };
  const credential = (kind: string) => fs.readFile(path.join(dataDir, 'credentials', `instance_${kind}`), 'utf8');

  before(async () => {
    dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'cxo-standin-unit-'));
  });
  after(async () => {
    await fs.rm(dataDir, { recursive: true, force: true });
  });

  it('derives the admin key from INSTANCE_NAME and INSTANCE_SECRET', () => {
    const secret = randomBytes(32).toString('hex');
    const r = run(['--generate-admin-key'], { INSTANCE_NAME: 'my-app', INSTANCE_SECRET: secret });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, expectedKey('my-app', secret));
    assert.notEqual(r.stdout, expectedKey('my-app', randomBytes(32).toString('hex')));
  });

  it('has no secret to use before the backend ever ran', () => {
    const r = run(['--generate-admin-key'], {});
    assert.equal(r.code, 1);
    assert.match(r.stderr, /no INSTANCE_SECRET/);
  });

  it('refuses a secret that is not 32 bytes of hex', () => {
    const r = run(['--generate-admin-key'], { INSTANCE_SECRET: '"quoted-by-mistake"' });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /must be 32 bytes of hex/);
  });

  it('refuses a POSTGRES_URL with a path or without a user, after writing back name and a new secret', async () => {
    const withPath = run([], { POSTGRES_URL: 'postgresql://convex:pw@db.example:5432/convex_self_hosted' });
    assert.equal(withPath.code, 1);
    assert.match(withPath.stderr, /ERROR cluster url already contains db name: \/convex_self_hosted$/m);
    assert.doesNotMatch(withPath.stdout + withPath.stderr, /pw@/, 'the password is never logged');
    // Nothing in the environment: the defaults were used, and written back.
    assert.equal(await credential('name'), 'convex-self-hosted');
    const secret = await credential('secret');
    assert.match(secret, /^[0-9a-f]{64}$/);

    const noUser = run([], { POSTGRES_URL: 'postgresql://db.example:5432?sslmode=disable' });
    assert.equal(noUser.code, 1);
    assert.match(noUser.stderr, /ERROR cluster url username must be set/);
    assert.equal(await credential('secret'), secret, 'the persisted secret is reused, not regenerated');
  });

  it('looks up the environment first, then the credentials files', async () => {
    const fileSecret = await credential('secret');
    assert.equal(run(['--generate-admin-key'], {}).stdout, expectedKey('convex-self-hosted', fileSecret));
    const envSecret = randomBytes(32).toString('hex');
    assert.equal(run(['--generate-admin-key'], { INSTANCE_SECRET: envSecret, INSTANCE_NAME: 'other' }).stdout, expectedKey('other', envSecret));
    // The key generator only reads; the backend is what writes back.
    assert.equal(await credential('secret'), fileSecret);
  });

  it('uses S3 only with all six S3 variables; with some, warns naming the missing ones and stays local', () => {
    const storage = (env: Record<string, string>) => {
      const code = 'import importlib.util, sys; s = importlib.util.spec_from_file_location("b", sys.argv[1]); b = importlib.util.module_from_spec(s); s.loader.exec_module(b); print(b.file_storage().describe())';
      // No __pycache__ beside backend.py: the stand-in images are hashed from that folder.
      const r = spawnSync(python ?? 'python3', ['-c', code, BACKEND], { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', PYTHONDONTWRITEBYTECODE: '1', CONVEX_STANDIN_DATA_DIR: dataDir, ...env }, encoding: 'utf8' });
      return { stdout: r.stdout.trim(), stderr: r.stderr.trim() };
    };
    const all = { AWS_REGION: 'us-east-1', S3_STORAGE_EXPORTS_BUCKET: 'e', S3_STORAGE_SNAPSHOT_IMPORTS_BUCKET: 'i', S3_STORAGE_MODULES_BUCKET: 'm', S3_STORAGE_FILES_BUCKET: 'files', S3_STORAGE_SEARCH_BUCKET: 's', S3_ENDPOINT_URL: 'http://10.0.0.9:4568', AWS_S3_FORCE_PATH_STYLE: 'true' };
    assert.equal(storage(all).stdout, 'S3 storage in bucket files at http://10.0.0.9:4568');
    const { AWS_REGION: _region, S3_STORAGE_SEARCH_BUCKET: _search, ...partial } = all;
    const fallback = storage(partial);
    assert.equal(fallback.stdout, `local storage at ${dataDir}/storage/files`);
    assert.match(fallback.stderr, /WARN Some S3 storage environment variables are set but not all of them \(missing: AWS_REGION, S3_STORAGE_SEARCH_BUCKET\); using local storage/);
    assert.equal(storage({}).stderr, '', 'no S3 variable: local storage, no warning');
  });

  it('gives backend and dashboard of one version the same fake revision', () => {
    assert.match(standinRevision('v1'), /^[0-9a-f]{40}$/);
    assert.equal(standinRevision('v1'), standinRevision('v1'));
    assert.notEqual(standinRevision('v1'), standinRevision('v2'));
  });
});
