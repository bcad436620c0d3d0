// The backend and dashboard stand-ins, for real: images built on the local engine, a real
// PostgreSQL (Debian's, in a container built from the fleet's base image) with and without
// TLS, and HTTP/websocket clients from the host. Everything this test starts is named
// cxo-[$FLEET_NAMESPACE]standin-test-* and removed at the end (and at the start, after an interrupted run).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { ensureDockerEngine } from '../fleet/engine.ts';
import { ensureBaseImage } from '../fleet/images.ts';
import { resolveFleetName } from '../fleet/index.ts';
import { docker, dockerOut, waitFor } from '../fleet/proc.ts';
import { buildStandinImages, standinRevision, REVISION_LABEL } from '../standins/build.ts';

// Namespaced like the fleets ($FLEET_NAMESPACE), so that two checkouts can run this file at once.
const PREFIX = `cxo-${resolveFleetName('standin-test')}-`;
const NETWORK = `${PREFIX}net`;
const PG = { snakeoil: `${PREFIX}pg`, ca: `${PREFIX}pg-ca`, nossl: `${PREFIX}pg-nossl` } as const;
const PG_USER = 'convex';
const PG_PASSWORD = 'convexpass123';
const url = (host: string, query = '') => `postgresql://${PG_USER}:${PG_PASSWORD}@${host}:5432${query}`;
const SECRET = randomBytes(32).toString('hex');
const OTHER_SECRET = randomBytes(32).toString('hex');

// ------------------------------------------------------------------------------ PostgreSQL image

// Debian's postgresql, whose cluster has ssl=on with the snakeoil certificate, exactly what a
// droplet gets from apt. start.sh can turn TLS off, or serve a certificate from a throwaway CA
// (a "managed" server whose CA is given to the backend with PG_CA_FILE).
const PG_FILES: Record<string, string> = {
  Dockerfile: `ARG BASE
FROM \${BASE}
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \\
 && apt-get install -y --no-install-recommends ssl-cert openssl \\
 && apt-get install -y --no-install-recommends postgresql \\
 && rm -rf /var/lib/apt/lists/*
COPY setup.sh start.sh /usr/local/bin/
RUN sh /usr/local/bin/setup.sh
USER postgres
CMD ["sh", "/usr/local/bin/start.sh"]
`,
  'setup.sh': `set -eu
v=$(ls /usr/lib/postgresql | sort -n | tail -1)
echo "$v" > /etc/pg-version
conf=/etc/postgresql/$v/main
echo "listen_addresses = '*'" >> "$conf/postgresql.conf"
echo "host all all 0.0.0.0/0 scram-sha-256" >> "$conf/pg_hba.conf"
grep -q "^ssl = on" "$conf/postgresql.conf"   # Debian's default, which the TLS tests rely on
pg_ctlcluster "$v" main start
su postgres -c "psql -v ON_ERROR_STOP=1 -c \\"CREATE ROLE ${PG_USER} LOGIN PASSWORD '${PG_PASSWORD}'\\" -c 'CREATE DATABASE convex_self_hosted OWNER ${PG_USER}'"
pg_ctlcluster "$v" main stop
install -d -o postgres -g postgres -m 2775 /var/run/postgresql
`,
  'start.sh': `set -eu
v=$(cat /etc/pg-version)
set -- -D "/var/lib/postgresql/$v/main" -c "config_file=/etc/postgresql/$v/main/postgresql.conf" -c log_connections=on
case "\${PG_TLS:-snakeoil}" in
  snakeoil) ;;
  off) set -- "$@" -c ssl=off ;;
  ca)
    d=/var/lib/postgresql/tls; mkdir -p "$d"; cd "$d"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj "/CN=cxo standin test CA" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=$PG_TLS_NAME" 2>/dev/null
    printf 'subjectAltName=DNS:%s\\nbasicConstraints=CA:FALSE\\nextendedKeyUsage=serverAuth\\n' "$PG_TLS_NAME" > ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile ext 2>/dev/null
    chmod 600 server.key
    set -- "$@" -c "ssl_cert_file=$d/server.pem" -c "ssl_key_file=$d/server.key" ;;
esac
exec "/usr/lib/postgresql/$v/bin/postgres" "$@"
`,
};

async function ensurePostgresImage(base: string): Promise<string> {
  const hash = createHash('sha256').update(JSON.stringify({ base, PG_FILES })).digest('hex').slice(0, 12);
  const tag = `convex-ops-standin/test-postgres:${hash}`;
  if ((await docker(['image', 'inspect', tag], { allowFail: true })).code === 0) return tag;
  const context = await fs.mkdtemp(path.join(os.tmpdir(), 'cxo-standin-pg-'));
  try {
    for (const [name, text] of Object.entries(PG_FILES)) await fs.writeFile(path.join(context, name), text);
    await docker(['build', '--build-arg', `BASE=${base}`, '--tag', tag, context], { env: { ...process.env, DOCKER_BUILDKIT: '0' } });
  } finally {
    await fs.rm(context, { recursive: true, force: true });
  }
  return tag;
}

// ------------------------------------------------------------------------------ containers

async function cleanUp(): Promise<void> {
  const containers = (await dockerOut(['ps', '-aq', '--filter', `name=^/${PREFIX}`])).split('\n').filter(Boolean);
  if (containers.length > 0) await docker(['rm', '-f', '-v', ...containers], { allowFail: true });
  const volumes = (await dockerOut(['volume', 'ls', '-q', '--filter', `name=^${PREFIX}`])).split('\n').filter(Boolean);
  if (volumes.length > 0) await docker(['volume', 'rm', '-f', ...volumes], { allowFail: true });
  await docker(['network', 'rm', NETWORK], { allowFail: true });
}

const envArgs = (env: Record<string, string>): string[] => Object.entries(env).flatMap(([k, v]) => ['-e', `${k}=${v}`]);
const logsOf = async (name: string): Promise<string> => {
  const r = await docker(['logs', name], { allowFail: true });
  return r.stdout + r.stderr;
};

/** A backend that must refuse to start: returns its exit code and output. */
async function runToExit(name: string, image: string, env: Record<string, string>): Promise<{ code: number; output: string }> {
  const r = await docker(['run', '--rm', '--name', `${PREFIX}${name}`, '--network', NETWORK, ...envArgs(env), image], {
    allowFail: true,
  });
  return { code: r.code, output: r.stdout + r.stderr };
}

interface Running {
  name: string;
  api: string;
  site: string;
}

/** Start a backend (files copied in before it starts) and wait until it listens. */
async function startBackend(
  name: string,
  image: string,
  env: Record<string, string>,
  opts: { volume?: string; files?: Record<string, string> } = {},
): Promise<Running> {
  const full = `${PREFIX}${name}`;
  await docker([
    'create',
    '--name',
    full,
    '--network',
    NETWORK,
    '-p',
    '127.0.0.1::3210',
    '-p',
    '127.0.0.1::3211',
    ...(opts.volume ? ['-v', `${PREFIX}${opts.volume}:/convex/data`] : []),
    ...envArgs(env),
    image,
  ]);
  for (const [inside, hostPath] of Object.entries(opts.files ?? {})) await docker(['cp', hostPath, `${full}:${inside}`]);
  await docker(['start', full]);
  await waitForLog(full, 'backend listening on 0.0.0.0:3210', 1);
  const port = async (p: number) => (await dockerOut(['port', full, `${p}/tcp`])).split('\n')[0]!.trim();
  return { name: full, api: `http://${await port(3210)}`, site: `http://${await port(3211)}` };
}

/** Wait until `text` appears at least `times` times in the logs; fail early if the container stops. */
async function waitForLog(container: string, text: string, times: number): Promise<string> {
  return waitFor(`"${text}" in the logs of ${container}`, 30_000, async () => {
    const logs = await logsOf(container);
    if (logs.split(text).length - 1 >= times) return logs;
    const state = await dockerOut(['inspect', '--format', '{{.State.Status}}', container]);
    if (state === 'exited' || state === 'dead') throw new Error(`${container} stopped:\n${logs}`);
    return undefined;
  });
}

/** compose's stop grace period: a container still running this long after SIGINT is killed. */
const COMPOSE_STOP_GRACE_MS = 10_000;

/**
 * Stop as compose does (SIGINT) and return the exit code. Fails when the container is still
 * running after compose's grace period, where compose would have killed it.
 */
async function stopWithSigint(container: string): Promise<number> {
  await docker(['kill', '--signal', 'SIGINT', container]);
  return waitFor(`${container} to stop on SIGINT within compose's grace period`, COMPOSE_STOP_GRACE_MS, async () => {
    const [status, code] = (await dockerOut(['inspect', '--format', '{{.State.Status}} {{.State.ExitCode}}', container])).split(' ');
    return status === 'exited' ? Number(code) : undefined;
  });
}

async function adminKey(container: string, env: Record<string, string> = {}): Promise<string> {
  return dockerOut(['exec', ...envArgs(env), container, './generate_admin_key.sh']);
}

async function psql(container: string, sql: string): Promise<string> {
  return dockerOut(['exec', container, 'psql', '-d', 'convex_self_hosted', '-Atc', sql]);
}

// ------------------------------------------------------------------------------ websocket client

/** Minimal RFC 6455 client: handshake, one masked text frame, read the echo, close. */
function websocketEcho(base: string, wsPath: string, message: string): Promise<{ accept: string; echoed: string }> {
  const { hostname, port } = new URL(base);
  const key = randomBytes(16).toString('base64');
  const expectedAccept = createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(port), hostname);
    let buffer = Buffer.alloc(0);
    let upgraded = false;
    socket.setTimeout(10_000, () => socket.destroy(new Error('websocket timed out')));
    socket.on('error', reject);
    socket.on('connect', () => {
      socket.write(
        `GET ${wsPath} HTTP/1.1\r\nHost: ${hostname}:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
      );
    });
    socket.on('data', (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk]);
      if (!upgraded) {
        const end = buffer.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buffer.subarray(0, end).toString('latin1');
        buffer = buffer.subarray(end + 4);
        if (!head.startsWith('HTTP/1.1 101')) return reject(new Error(`no upgrade: ${head}`));
        const accept = /^sec-websocket-accept:\s*(\S+)/im.exec(head)?.[1] ?? '';
        if (accept !== expectedAccept) return reject(new Error(`bad Sec-WebSocket-Accept ${accept}`));
        upgraded = true;
        const payload = Buffer.from(message, 'utf8');
        const mask = randomBytes(4);
        const masked = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]!));
        socket.write(Buffer.concat([Buffer.from([0x81, 0x80 | payload.length]), mask, masked]));
      }
      if (buffer.length >= 2) {
        const length = buffer[1]! & 0x7f;
        if (buffer.length < 2 + length) return;
        const echoed = buffer.subarray(2, 2 + length).toString('utf8');
        socket.end(Buffer.from([0x88, 0x80, 0, 0, 0, 0]));
        resolve({ accept: expectedAccept, echoed });
      }
    });
  });
}

// ------------------------------------------------------------------------------ tests

describe('backend and dashboard stand-ins', { timeout: 15 * 60_000 }, () => {
  let images: { backend: Record<string, string>; dashboard: Record<string, string> };
  let scratch: string;
  const backend = (version: string): string => images.backend[version]!;

  before(async () => {
    await ensureDockerEngine();
    const base = await ensureBaseImage();
    await cleanUp();
    scratch = await fs.mkdtemp(path.join(os.tmpdir(), 'cxo-standin-test-'));
    const [built, pgImage] = await Promise.all([buildStandinImages({ baseImage: base }), ensurePostgresImage(base)]);
    images = built;
    await docker(['network', 'create', NETWORK]);
    await Promise.all([
      docker(['run', '-d', '--name', PG.snakeoil, '--network', NETWORK, pgImage]),
      docker(['run', '-d', '--name', PG.nossl, '--network', NETWORK, '-e', 'PG_TLS=off', pgImage]),
      docker(['run', '-d', '--name', PG.ca, '--network', NETWORK, '-e', 'PG_TLS=ca', '-e', `PG_TLS_NAME=${PG.ca}`, pgImage]),
    ]);
    for (const name of Object.values(PG)) {
      await waitFor(`${name} to accept connections`, 60_000, async () =>
        (await docker(['exec', name, 'pg_isready', '-q', '-h', '127.0.0.1'], { allowFail: true })).code === 0 ? true : undefined,
      );
    }
  });

  after(async () => {
    await cleanUp();
    if (scratch) await fs.rm(scratch, { recursive: true, force: true });
  });

  it('builds every tag with its revision label, and skips rebuilding when nothing changed', async () => {
    assert.deepEqual(Object.keys(images.backend), ['v1', 'v2', 'broken', 'fragile', 'fragile-v1']);
    assert.deepEqual(Object.keys(images.dashboard), ['v1', 'v2']);
    for (const [version, ref] of [...Object.entries(images.backend), ...Object.entries(images.dashboard)]) {
      const label = await dockerOut(['image', 'inspect', '--format', `{{ index .Config.Labels "${REVISION_LABEL}" }}`, ref]);
      assert.equal(label, standinRevision(version), ref);
    }
    // A build, even one served entirely from the cache, tags its image again; a skipped one does not.
    const tagged = (refs: Record<string, string>) => dockerOut(['image', 'inspect', '--format', '{{.Id}} {{.Metadata.LastTagTime}}', ...Object.values(refs)]);
    const taggedBefore = await tagged(images.backend);
    const pushed: string[] = [];
    const again = await buildStandinImages({
      baseImage: await ensureBaseImage(),
      push: async (local, remote) => {
        pushed.push(`${local} -> ${remote}`);
      },
    });
    assert.equal(await tagged(again.backend), taggedBefore, 'a rebuild with nothing changed is skipped');
    assert.ok(pushed.includes(`${images.backend.v1} -> convex-backend:v1`), pushed.join('\n'));
    assert.ok(pushed.includes(`${images.dashboard.v2} -> convex-dashboard:v2`), pushed.join('\n'));
    assert.equal(pushed.length, 7);
  });

  describe('refuses bad configuration, with the real messages, and exits non-zero', () => {
    const base = { INSTANCE_SECRET: SECRET, INSTANCE_NAME: 'convex-self-hosted' };

    it('a POSTGRES_URL that contains a database name', async () => {
      const r = await runToExit('dbname', backend('v1'), { ...base, POSTGRES_URL: `${url(PG.snakeoil)}/convex_self_hosted`, DO_NOT_REQUIRE_SSL: 'true' });
      assert.equal(r.code, 1, r.output);
      assert.match(r.output, /ERROR cluster url already contains db name: \/convex_self_hosted$/m);
    });

    it('a POSTGRES_URL with no user', async () => {
      const r = await runToExit('nouser', backend('v1'), { ...base, POSTGRES_URL: `postgresql://${PG.snakeoil}:5432?sslmode=disable`, DO_NOT_REQUIRE_SSL: 'true' });
      assert.equal(r.code, 1, r.output);
      assert.match(r.output, /ERROR cluster url username must be set/);
    });

    it('a database that does not exist (named from INSTANCE_NAME)', async () => {
      const r = await runToExit('nodb', backend('v1'), {
        ...base,
        INSTANCE_NAME: 'no-such-app',
        POSTGRES_URL: url(PG.snakeoil, '?sslmode=disable'),
        DO_NOT_REQUIRE_SSL: 'true',
      });
      assert.equal(r.code, 1, r.output);
      assert.match(r.output, /ERROR .*database "no_such_app" does not exist/);
    });

    it('the snakeoil certificate, without DO_NOT_REQUIRE_SSL (even with ?sslmode=disable)', async () => {
      const r = await runToExit('snakeoil', backend('v1'), { ...base, POSTGRES_URL: url(PG.snakeoil, '?sslmode=disable') });
      assert.equal(r.code, 1, r.output);
      assert.match(r.output, /ERROR .*TLS handshake: invalid peer certificate/);
    });

    it('the snakeoil certificate with DO_NOT_REQUIRE_SSL but no sslmode=disable (TLS still preferred)', async () => {
      const r = await runToExit('prefer', backend('v1'), { ...base, POSTGRES_URL: url(PG.snakeoil), DO_NOT_REQUIRE_SSL: 'true' });
      assert.equal(r.code, 1, r.output);
      assert.match(r.output, /TLS handshake: invalid peer certificate/);
    });

    it('a server without TLS, when TLS is required', async () => {
      const r = await runToExit('nossl', backend('v1'), { ...base, POSTGRES_URL: url(PG.nossl) });
      assert.equal(r.code, 1, r.output);
      assert.match(r.output, /ERROR .*server does not support SSL, but SSL was required/);
    });

    it('a refused connection', async () => {
      const r = await runToExit('refused', backend('v1'), { ...base, POSTGRES_URL: `postgresql://${PG_USER}:x@${PG.snakeoil}:5999?sslmode=disable`, DO_NOT_REQUIRE_SSL: 'true' });
      assert.equal(r.code, 1, r.output);
      assert.match(r.output, /ERROR .*Connection refused/i);
    });

    it('origins without http:// or https://', async () => {
      const r = await runToExit('origin', backend('v1'), { ...base, CONVEX_CLOUD_ORIGIN: 'api.example.test' });
      assert.equal(r.code, 1, r.output);
      assert.match(r.output, /ERROR CONVEX_CLOUD_ORIGIN must start with http:\/\/ or https:\/\//);
    });
  });

  describe('connects to PostgreSQL as documented', () => {
    it('with a CA given by PG_CA_FILE, TLS verified (a managed server)', async () => {
      const ca = path.join(scratch, 'pg-ca.pem');
      await fs.writeFile(ca, await dockerOut(['exec', PG.ca, 'cat', '/var/lib/postgresql/tls/ca.pem']));
      const b = await startBackend('managed', backend('v1'), { INSTANCE_SECRET: SECRET, POSTGRES_URL: url(PG.ca), PG_CA_FILE: '/etc/pg-ca.pem' }, { files: { '/etc/pg-ca.pem': ca } });
      assert.match(await logsOf(b.name), /INFO Connected to Postgres database: convex_self_hosted/);
      // log_connections is on: PostgreSQL itself says the backend's connection used TLS.
      assert.match(await logsOf(PG.ca), /connection authorized: user=convex database=convex_self_hosted application_name=convex-backend-standin SSL enabled/);
      await docker(['rm', '-f', b.name]);
    });

    it('with DO_NOT_REQUIRE_SSL and no sslmode, to a server without TLS (plain fallback)', async () => {
      const b = await startBackend('plain', backend('v1'), { INSTANCE_SECRET: SECRET, POSTGRES_URL: url(PG.nossl), DO_NOT_REQUIRE_SSL: 'true' });
      assert.match(await logsOf(b.name), /Connected to Postgres database: convex_self_hosted/);
      await docker(['rm', '-f', b.name]);
    });
  });

  describe('v1 on PostgreSQL (DO_NOT_REQUIRE_SSL + sslmode=disable), then upgrade and rollback', () => {
    const env = {
      INSTANCE_NAME: 'convex-self-hosted',
      INSTANCE_SECRET: SECRET,
      POSTGRES_URL: url(PG.snakeoil, '?sslmode=disable'),
      DO_NOT_REQUIRE_SSL: 'true',
      CONVEX_CLOUD_ORIGIN: 'https://api.example.test',
      CONVEX_SITE_ORIGIN: 'https://example.test',
    };
    let b: Running;
    let key: string;
    const auth = (k: string) => ({ Authorization: `Convex ${k}` });

    before(async () => {
      b = await startBackend('v1', backend('v1'), env, { volume: 'data-pg' });
      key = await adminKey(b.name);
    });

    it('logs the connection and creates its tables', async () => {
      const logs = await logsOf(b.name);
      assert.match(logs, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ INFO Connected to Postgres database: convex_self_hosted$/m);
      assert.match(logs, /INFO backend listening on 0\.0\.0\.0:3210/);
      const tables = await psql(PG.snakeoil, "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables WHERE schemaname = 'public'");
      assert.equal(tables, 'documents,indexes,persistence_globals');
      assert.equal(await psql(PG.snakeoil, "SELECT json_value FROM persistence_globals WHERE key = 'database_version'"), '1');
    });

    it('serves /version, /instance_name, /instance_version and /', async () => {
      assert.equal(await (await fetch(`${b.api}/version`)).text(), 'v1');
      assert.equal(await (await fetch(`${b.api}/instance_name`)).text(), 'convex-self-hosted');
      assert.equal(await (await fetch(`${b.api}/instance_version`)).text(), 'v1');
      assert.match(await (await fetch(`${b.api}/`)).text(), /^This Convex deployment is running/);
      const health = await docker(['exec', b.name, 'curl', '-fsS', 'http://localhost:3210/version'], { allowFail: true });
      assert.equal(health.code, 0, 'the compose health check command passes');
    });

    it('admin key from generate_admin_key.sh: document API in PostgreSQL and under /convex/data', async () => {
      assert.match(key, /^convex-self-hosted\|[0-9a-f]{64}$/);
      assert.equal((await fetch(`${b.api}/api/check_admin_key`, { headers: auth(key) })).status, 200);
      const put = await fetch(`${b.api}/api/documents/greeting`, { method: 'PUT', headers: auth(key), body: JSON.stringify({ hello: 'world', n: 1 }) });
      assert.equal(put.status, 200, await put.clone().text());
      const got = await fetch(`${b.api}/api/documents/greeting`, { headers: auth(key) });
      assert.equal(got.status, 200);
      assert.deepEqual(await got.json(), { hello: 'world', n: 1 });
      assert.equal(await psql(PG.snakeoil, "SELECT json_value FROM documents WHERE id = 'greeting'"), '{"hello":"world","n":1}');
      assert.equal(await dockerOut(['exec', b.name, 'cat', '/convex/data/storage/greeting.json']), '{"hello":"world","n":1}');
      await fetch(`${b.api}/api/documents/doomed`, { method: 'PUT', headers: auth(key), body: '{}' });
      assert.equal((await fetch(`${b.api}/api/documents/doomed`, { method: 'DELETE', headers: auth(key) })).status, 200);
      assert.equal((await fetch(`${b.api}/api/documents/doomed`, { headers: auth(key) })).status, 404);
      assert.equal((await docker(['exec', b.name, 'test', '-e', '/convex/data/storage/doomed.json'], { allowFail: true })).code, 1);
    });

    it('rejects a key made with another secret or another name, and no key', async () => {
      const otherSecret = await adminKey(b.name, { INSTANCE_SECRET: OTHER_SECRET });
      const otherName = await adminKey(b.name, { INSTANCE_NAME: 'another-app' });
      assert.notEqual(otherSecret, key);
      for (const bad of [otherSecret, otherName]) {
        const r = await fetch(`${b.api}/api/documents/greeting`, { headers: auth(bad) });
        assert.equal(r.status, 401);
        assert.equal(((await r.json()) as { code: string }).code, 'BadAdminKey');
        assert.equal((await fetch(`${b.api}/api/check_admin_key`, { headers: auth(bad) })).status, 401);
      }
      assert.equal((await fetch(`${b.api}/api/documents/greeting`)).status, 401);
    });

    it('echoes websocket messages at /api/sync and /api/<client version>/sync', async () => {
      for (const wsPath of ['/api/sync', '/api/1.16.0/sync']) {
        const r = await websocketEcho(b.api, wsPath, `hello over ${wsPath}`);
        assert.equal(r.echoed, `hello over ${wsPath}`);
      }
    });

    it('proxies 3211 /X to 3210 /http/X, at most 4 requests in flight', async () => {
      const r = await fetch(`${b.site}/hello/world?x=1`, { method: 'POST', body: 'ping' });
      assert.equal(r.status, 200);
      const echo = (await r.json()) as { path: string; query: string; body: string; method: string };
      assert.deepEqual({ path: echo.path, query: echo.query, body: echo.body, method: echo.method }, { path: '/hello/world', query: 'x=1', body: 'ping', method: 'POST' });
      // Concurrency is counted by the stand-in, never timed: 8 actions held open until released,
      // the stand-in counting how many are held at once and how many wait for a proxy slot.
      const counts = async (hold: string) =>
        (await (await fetch(`${b.api}/__standin/holds/${hold}`)).json()) as { held: number; max_held: number; site_proxy_waiting: number };
      const heldAtOnce = async (base: string, prefix: string, hold: string, settled: (c: Awaited<ReturnType<typeof counts>>) => boolean) => {
        const all = Promise.all(Array.from({ length: 8 }, (_, i) => fetch(`${base}${prefix}/held/${i}?hold=${hold}`)));
        const reached = await waitFor(`8 requests held or queued (${hold})`, 30_000, async () => {
          const c = await counts(hold);
          return settled(c) ? c : undefined;
        });
        await fetch(`${b.api}/__standin/holds/${hold}/release`, { method: 'POST' });
        assert.ok((await all).every(x => x.status === 200));
        return { reached, max: (await counts(hold)).max_held };
      };
      const direct = await heldAtOnce(b.api, '/http', 'direct', c => c.held === 8);
      assert.equal(direct.max, 8, 'all 8 requests straight to 3210 are in flight at once');
      // Through the proxy: released only once all 8 have reached it, 4 held and 4 waiting for a slot.
      const proxied = await heldAtOnce(b.site, '', 'proxied', c => c.held + c.site_proxy_waiting === 8);
      assert.deepEqual({ held: proxied.reached.held, waiting: proxied.reached.site_proxy_waiting }, { held: 4, waiting: 4 }, '4 in flight, the other 4 wait for a slot');
      assert.equal(proxied.max, 4, 'never more than 4 requests in flight through the proxy');
    });

    it('stops promptly and cleanly on SIGINT', async () => {
      assert.equal(await stopWithSigint(b.name), 0);
      await docker(['rm', b.name]);
    });

    it('v2 on the v1 database runs "Executing Migration 1/1" and keeps the data', async () => {
      const v2 = await startBackend('v2', backend('v2'), env, { volume: 'data-pg' });
      const logs = await logsOf(v2.name);
      assert.match(logs, /Executing Migration 1\/1/);
      assert.equal(await psql(PG.snakeoil, "SELECT json_value FROM persistence_globals WHERE key = 'database_version'"), '2');
      assert.equal(await (await fetch(`${v2.api}/version`)).text(), 'v2');
      const got = await fetch(`${v2.api}/api/documents/greeting`, { headers: auth(key) });
      assert.deepEqual(await got.json(), { hello: 'world', n: 1 });
      await stopWithSigint(v2.name);
      await docker(['rm', v2.name]);
      // Started again, v2 finds the database up to date.
      const again = await startBackend('v2-again', backend('v2'), env, { volume: 'data-pg' });
      assert.doesNotMatch(await logsOf(again.name), /Executing Migration/);
      await docker(['rm', '-f', again.name]);
    });

    it('v1 again (rollback) warns that the database is ahead, and serves', async () => {
      const v1 = await startBackend('rollback', backend('v1'), env, { volume: 'data-pg' });
      assert.match(await logsOf(v1.name), /WARN persisted db metadata version is ahead at 2, this binary is at 1/);
      assert.equal((await fetch(`${v1.api}/api/documents/greeting`, { headers: auth(key) })).status, 200);
      await docker(['rm', '-f', v1.name]);
    });
  });

  it('without INSTANCE_SECRET: SQLite, a generated secret persisted in credentials, same key after a restart', async () => {
    const b = await startBackend('sqlite', backend('v2'), {}, { volume: 'data-sqlite' });
    const logs = await logsOf(b.name);
    assert.match(logs, /Connected to SQLite database: \/convex\/data\/db\.sqlite3/);
    const secret = await dockerOut(['exec', b.name, 'cat', '/convex/data/credentials/instance_secret']);
    assert.match(secret, /^[0-9a-f]{64}$/);
    assert.equal(await dockerOut(['exec', b.name, 'cat', '/convex/data/credentials/instance_name']), 'convex-self-hosted');
    const key = await adminKey(b.name);
    const auth = { Authorization: `Convex ${key}` };
    assert.equal((await fetch(`${b.api}/api/documents/kept`, { method: 'PUT', headers: auth, body: '[1,2,3]' })).status, 200);
    await docker(['restart', b.name]);
    await waitForLog(b.name, 'backend listening on 0.0.0.0:3210', 2);
    assert.equal(await dockerOut(['exec', b.name, 'cat', '/convex/data/credentials/instance_secret']), secret);
    const port = (await dockerOut(['port', b.name, '3210/tcp'])).split('\n')[0]!.trim();
    const got = await fetch(`http://${port}/api/documents/kept`, { headers: auth });
    assert.equal(got.status, 200);
    assert.deepEqual(await got.json(), [1, 2, 3]);
    await docker(['rm', '-f', b.name]);
  });

  it('broken: /version answers 500, so the health check fails', async () => {
    const b = await startBackend('broken', backend('broken'), { INSTANCE_SECRET: SECRET });
    assert.equal((await fetch(`${b.api}/version`)).status, 500);
    assert.notEqual((await docker(['exec', b.name, 'curl', '-f', 'http://localhost:3210/version'], { allowFail: true })).code, 0);
    await docker(['rm', '-f', b.name]);
  });

  it('fragile: healthy until /convex/data/FAIL_HERE exists', async () => {
    const b = await startBackend('fragile', backend('fragile'), { INSTANCE_SECRET: SECRET });
    const version = await fetch(`${b.api}/version`);
    assert.equal(version.status, 200);
    assert.equal(await version.text(), 'fragile');
    await docker(['exec', b.name, 'touch', '/convex/data/FAIL_HERE']);
    assert.equal((await fetch(`${b.api}/version`)).status, 500);
    await docker(['exec', b.name, 'rm', '/convex/data/FAIL_HERE']);
    assert.equal((await fetch(`${b.api}/version`)).status, 200);
    await docker(['rm', '-f', b.name]);
  });

  it('dashboard: 200 on 6791 with NEXT_PUBLIC_DEPLOYMENT_URL, /health, and SIGINT', async () => {
    const name = `${PREFIX}dashboard`;
    await docker(['run', '-d', '--name', name, '-p', '127.0.0.1::6791', '-e', 'NEXT_PUBLIC_DEPLOYMENT_URL=https://api.example.test', images.dashboard.v1!]);
    await waitForLog(name, 'listening on 0.0.0.0:6791', 1);
    const port = (await dockerOut(['port', name, '6791/tcp'])).split('\n')[0]!.trim();
    const page = await fetch(`http://${port}/`);
    assert.equal(page.status, 200);
    assert.match(await page.text(), /https:\/\/api\.example\.test/);
    assert.equal((await fetch(`http://${port}/health`)).status, 200);
    assert.equal(await stopWithSigint(name), 0);
  });
});
