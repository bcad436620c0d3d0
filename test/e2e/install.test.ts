// install.ts end to end (issue 3): a fresh droplet reached as a sudo user, the guide's manual
// install adopted with its secret, data, admin key, unrelated database and nginx site intact,
// external PostgreSQL over verified TLS with an awkward password, and bad inputs refused before
// anything changes. Every product action is `npx zx scripts/install.ts …`, as a user runs it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fleetHooks } from '../fleet/index.ts';
import { adminKeyOf, backendUrl, getDocument, parseRunJson, putDocument } from './convex-api.ts';

const getFleet = fleetHooks({
  name: 'install',
  droplets: [
    { name: 'fresh', user: 'deploy' },
    { name: 'legacy', user: 'root' },
    { name: 'ext', user: 'root' },
    { name: 'pg', user: 'root' },
  ],
});

const fleet = new Proxy({} as ReturnType<typeof getFleet>, { get: (_target, key) => Reflect.get(getFleet(), key) });

const sh = async (droplet: string, cmd: string) => (await fleet.exec(droplet, cmd)).stdout.trim();

/**
 * What "nothing changed on the host" is judged by: managed files, packages and containers. (The
 * run lock's holder note in /var/lib/convex-ops is rewritten by every run, by design.)
 */
async function hostState(droplet: string): Promise<string> {
  return sh(
    droplet,
    'ls -la --time-style=full-iso /opt/convex/ 2>&1; ls -l --time-style=full-iso /var/lib/convex-ops/pending 2>&1; sha256sum /opt/convex/.env /opt/convex/docker-compose.yml /etc/postgresql/*/main/pg_hba.conf 2>&1; ' +
      "dpkg-query -W -f='${Package} ${Version}\\n' | sha256sum; docker ps -a --format '{{.Names}} {{.ID}} {{.Status}}' 2>&1 | sed 's/Up .*/Up/'; " +
      "docker inspect --format '{{.State.StartedAt}}' convex-backend convex-dashboard 2>&1",
  );
}

const startedAt = (droplet: string) => sh(droplet, "docker inspect --format '{{.Name}} {{.State.StartedAt}}' convex-backend convex-dashboard");

test('a fresh droplet, reached as a sudo user, goes through install.ts and its checks pass', async () => {
  const run = await fleet.runScript('install.ts', ['--host', 'fresh']);
  assert.equal(run.code, 0, run.stdout + run.stderr);
  for (const check of ['backend-healthy', 'dashboard', 'database', 'backend-connected', 'no-errors', 'env-mode', 'images-pinned']) {
    assert.match(run.stdout, new RegExp(`check ${check}\\s+ok`), `check ${check} did not pass:\n${run.stdout}`);
  }
  assert.match(run.stdout, /fresh\s+connect\s+ok.*deploy@/);
  assert.equal(await sh('fresh', 'stat -c "%a %U" /opt/convex/.env'), '600 root');
  assert.equal(await sh('fresh', 'readlink /opt/convex'), '/mnt/convex_fresh');
  // Secrets never appear in what the operator sees or in the log.
  const env = await sh('fresh', 'cat /opt/convex/.env');
  const secrets = ['INSTANCE_SECRET', 'POSTGRES_PASSWORD', 'CONVEX_ADMIN_KEY'].map(k => new RegExp(`^${k}=(.+)$`, 'm').exec(env)?.[1]);
  const log = readFileSync(join(fleet.dir, '.convex-ops', 'convex-ops.log'), 'utf8');
  for (const secret of secrets) {
    assert.ok(secret && secret.length >= 32, 'each secret is generated long');
    assert.ok(!run.stdout.includes(secret) && !run.stderr.includes(secret) && !log.includes(secret), 'a secret leaked into output or log');
  }
  // The database is reached with the generated password over the Docker bridge.
  assert.equal(await sh('fresh', `runuser -u postgres -- psql -XAtc "select pg_get_userbyid(datdba) from pg_database where datname='convex_self_hosted'"`), 'convex');
  assert.equal(await sh('fresh', 'grep -c "BEGIN Managed by convex-ops" /etc/postgresql/*/main/pg_hba.conf'), '1');
});

test('a second run changes nothing and restarts nothing, and a document written before survives', async () => {
  const key = await adminKeyOf(fleet, 'fresh');
  const url = backendUrl(fleet, 'fresh');
  assert.equal(await putDocument(url, key, 'before-rerun', { kept: true }), 200);
  const before = await startedAt('fresh');
  const stateBefore = await hostState('fresh');
  const run = await fleet.runScript('install.ts', ['--host', 'fresh', '--json']);
  assert.equal(run.code, 0, run.stdout + run.stderr);
  const json = parseRunJson(run.stdout);
  assert.deepEqual(json.hosts[0]!.recap, { ok: json.hosts[0]!.steps.length, changed: 0, failed: 0, skipped: 0 });
  assert.equal(await startedAt('fresh'), before, 'containers were restarted');
  assert.equal(await hostState('fresh'), stateBefore);
  assert.deepEqual((await getDocument(url, key, 'before-rerun')).body, { kept: true });
  const human = await fleet.runScript('install.ts', ['--host', 'fresh']);
  assert.match(human.stdout, /fresh\s+ok=\d+\s+changed=0\s+failed=0/);
});

test('bad input gets a clear error naming the problem and the fix, and changes nothing', async () => {
  const stateBefore = await hostState('fresh');
  const broken = join(fleet.dir, 'broken.toml');
  writeFileSync(broken, readFileSync(fleet.inventoryPath, 'utf8').replace('[hosts.fresh]', '[hosts.fresh]\naddress = = "x"'));
  const cases: Array<{ why: string; args: string[]; env?: NodeJS.ProcessEnv; expect: RegExp }> = [
    { why: 'unparsable TOML', args: ['--inventory', broken], expect: /broken\.toml:\d+:\d+: invalid TOML/ },
    { why: 'unknown host', args: ['--host', 'nope'], expect: /unknown host "nope".*Known hosts: .*fresh/ },
    { why: 'unknown key', args: ['--inventory', await fleet.writeInventory('typo', { hosts: { fresh: { instance_nmae: 'x' } } })], expect: /hosts\.fresh\.instance_nmae: unknown key\. Did you mean "instance_name"\?/ },
    { why: 'missing key', args: ['--inventory', await fleet.writeInventory('missing', { hosts: { fresh: { volume: null } } })], expect: /hosts\.fresh\.volume: required key is missing/ },
    { why: 'bad instance name', args: ['--inventory', await fleet.writeInventory('badname', { hosts: { fresh: { instance_name: 'My App!' } } })], expect: /instance_name: "My App!" cannot become a PostgreSQL database name/ },
    {
      why: 'url with a database',
      args: ['--inventory', await fleet.writeInventory('dburl', { hosts: { fresh: { postgres: { mode: 'external', url: 'postgresql://db.example.com:5432/swarmdb', password_env: 'X_PG' } } } })],
      env: { X_PG: 'secret-pw' },
      expect: /contains a database name \("\/swarmdb"\); Convex refuses it with "cluster url already contains db name: \/swarmdb"\. Remove the path/,
    },
    {
      why: 'missing password variable',
      args: ['--inventory', await fleet.writeInventory('nopw', { hosts: { fresh: { postgres: { mode: 'external', url: 'postgresql://db.example.com:5432', password_env: 'CONVEX_OPS_TEST_UNSET' } } } })],
      expect: /the environment variable CONVEX_OPS_TEST_UNSET is not set/,
    },
  ];
  for (const c of cases) {
    const args = c.args.includes('--host') ? c.args : ['--host', 'fresh', ...c.args];
    const run = await fleet.runScript('install.ts', args, c.env);
    assert.equal(run.code, 1, `${c.why}: exit ${run.code}\n${run.stdout}${run.stderr}`);
    assert.match(run.stderr, c.expect, c.why);
    assert.doesNotMatch(run.stdout, /connect/, `${c.why}: it connected`);
  }
  assert.equal(await hostState('fresh'), stateBefore);
});

test('the guide\'s manual install is adopted: its secret, data, admin key, other database and nginx site survive', async () => {
  // Lay the droplet out as the install guide does, by hand (preconditions, not product work).
  const secret = 'a'.repeat(16) + 'b'.repeat(16) + 'c'.repeat(16) + 'd'.repeat(16);
  await fleet.exec(
    'legacy',
    [
      'set -e',
      'apt-get -q update >/dev/null && apt-get -q install -y --no-install-recommends postgresql docker.io docker-compose nginx curl >/dev/null',
      'service postgresql start >/dev/null; service docker start >/dev/null; service nginx start >/dev/null',
      'for i in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done',
      `runuser -u postgres -- psql -q -c "CREATE USER swarm WITH PASSWORD 'convexpass123'" -c "CREATE DATABASE swarmdb OWNER swarm" -c "CREATE DATABASE convex_self_hosted OWNER swarm"`,
      `PGPASSWORD=convexpass123 psql -q -h 127.0.0.1 -U swarm -d swarmdb -c "CREATE TABLE users (name text); INSERT INTO users VALUES ('express app row')"`,
      'v=$(ls /etc/postgresql); echo "host    all    all    172.0.0.0/8    scram-sha-256" >> /etc/postgresql/$v/main/pg_hba.conf',
      `sed -i "s/^#*listen_addresses = .*/listen_addresses = '*'/" /etc/postgresql/$v/main/postgresql.conf`,
      'service postgresql restart >/dev/null',
      `printf 'server {\\n  listen 80;\\n  server_name swarm.test;\\n  location / { return 200 "swarm-platform\\\\n"; }\\n}\\n' > /etc/nginx/sites-available/swarm.conf`,
      'ln -s /etc/nginx/sites-available/swarm.conf /etc/nginx/sites-enabled/swarm.conf && service nginx reload >/dev/null',
      'mkdir -p /mnt/convex_legacy/data /mnt/convex_legacy/storage /mnt/convex_legacy/logs /mnt/convex_legacy/backups /mnt/convex_legacy/config',
      'ln -s /mnt/convex_legacy /opt/convex',
      `echo "INSTANCE_SECRET=${secret}" > /opt/convex/.env && chmod 600 /opt/convex/.env`,
    ].join('\n'),
  );
  const guideCompose = `services:
  backend:
    image: registry.test:5000/convex-backend:v1
    container_name: convex-backend
    stop_grace_period: 10s
    stop_signal: SIGINT
    restart: unless-stopped
    ports:
      - "3210:3210"
      - "3211:3211"
    volumes:
      - /mnt/convex_legacy/data:/convex/data
    environment:
      - INSTANCE_NAME=convex-self-hosted
      - INSTANCE_SECRET=\${INSTANCE_SECRET}
      - CONVEX_CLOUD_ORIGIN=http://127.0.0.1:3210
      - CONVEX_SITE_ORIGIN=http://127.0.0.1:3211
      - POSTGRES_URL=postgresql://swarm:convexpass123@host.docker.internal:5432?sslmode=disable
      - DO_NOT_REQUIRE_SSL=true
    extra_hosts:
      - "host.docker.internal:host-gateway"
    healthcheck:
      test: curl -f http://localhost:3210/version || exit 1
      interval: 5s
      retries: 5
  dashboard:
    image: registry.test:5000/convex-dashboard:v1
    container_name: convex-dashboard
    restart: unless-stopped
    ports:
      - "6791:6791"
    environment:
      - NEXT_PUBLIC_DEPLOYMENT_URL=http://127.0.0.1:3210
    depends_on:
      backend:
        condition: service_healthy
`;
  await fleet.exec('legacy', 'cat > /opt/convex/docker-compose.yml && cd /opt/convex && docker-compose up -d 2>&1', { input: guideCompose });
  await fleet.exec('legacy', 'for i in $(seq 60); do curl -sf http://127.0.0.1:3210/version && exit 0; sleep 1; done; docker logs convex-backend; exit 1');
  const oldKey = (await sh('legacy', 'docker exec convex-backend ./generate_admin_key.sh')).split('\n').pop()!;
  const url = backendUrl(fleet, 'legacy');
  assert.equal(await putDocument(url, oldKey, 'manual-era', { from: 'the guide' }), 200);
  const siteBefore = await sh('legacy', 'sha256sum /etc/nginx/sites-available/swarm.conf; ls -l /etc/nginx/sites-enabled/');

  const inventory = await fleet.writeInventory('legacy', { hosts: { legacy: { postgres: { user: 'swarm' } } } });
  const run = await fleet.runScript('install.ts', ['--host', 'legacy', '--inventory', inventory]);
  assert.equal(run.code, 0, run.stdout + run.stderr);
  assert.match(run.stdout, /legacy\s+secret\s+changed.*replace \.env \(the original is kept aside\)/);

  assert.equal(/^INSTANCE_SECRET=(.*)$/m.exec(await sh('legacy', 'cat /opt/convex/.env'))?.[1], secret, 'INSTANCE_SECRET was rotated');
  assert.deepEqual((await getDocument(url, oldKey, 'manual-era')).body, { from: 'the guide' }, 'the old admin key or the data did not survive');
  assert.match(await sh('legacy', 'ls /opt/convex/'), /docker-compose\.yml\.orig-convex-ops-/);
  assert.equal(await sh('legacy', `PGPASSWORD=convexpass123 psql -XAt -h 127.0.0.1 -U swarm -d swarmdb -c "select name from users"`), 'express app row');
  assert.equal(await sh('legacy', 'curl -s -H "Host: swarm.test" http://127.0.0.1/'), 'swarm-platform');
  assert.equal(await sh('legacy', 'sha256sum /etc/nginx/sites-available/swarm.conf; ls -l /etc/nginx/sites-enabled/'), siteBefore);
  const hba = await sh('legacy', 'cat /etc/postgresql/*/main/pg_hba.conf');
  assert.match(hba, /^host {4}all {4}all {4}172\.0\.0\.0\/8 {4}scram-sha-256$/m, "the guide's own pg_hba line is kept");
  assert.equal(hba.split('BEGIN Managed by convex-ops').length, 2);

  const again = await fleet.runScript('install.ts', ['--host', 'legacy', '--inventory', inventory]);
  assert.match(again.stdout, /legacy\s+ok=\d+\s+changed=0\s+failed=0/, again.stdout);
});

test('external mode: PostgreSQL with TLS on another droplet, a password with @:/%#? in it', async () => {
  const password = 'p@ss:w/rd%25#?&=x';
  // A CA and a server certificate for the database droplet's address, made on this machine.
  const dir = mkdtempSync(join(tmpdir(), 'convex-ops-pg-'));
  const ip = fleet.droplets.pg!.ip;
  const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '30', '-subj', '/CN=convex-ops test CA', '-keyout', 'ca.key', '-out', 'ca.pem');
  openssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=pg.test', '-keyout', 'server.key', '-out', 'server.csr');
  writeFileSync(join(dir, 'san.ext'), `subjectAltName = IP:${ip}, DNS:pg.test\n`);
  openssl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '30', '-extfile', 'san.ext', '-out', 'server.pem');
  await fleet.exec(
    'pg',
    [
      'set -e',
      'apt-get -q update >/dev/null && apt-get -q install -y --no-install-recommends postgresql >/dev/null',
      'v=$(ls /etc/postgresql); d=/etc/postgresql/$v/main',
      'cat > $d/server.pem; chown postgres $d/server.pem',
      `printf "ssl = on\\nssl_cert_file = '$d/server.pem'\\nssl_key_file = '$d/server.pem'\\nlisten_addresses = '*'\\n" > $d/conf.d/tls.conf`,
      'chmod 600 $d/server.pem',
      'echo "hostssl all all 0.0.0.0/0 scram-sha-256" >> $d/pg_hba.conf',
      'service postgresql restart >/dev/null',
    ].join('\n'),
    { input: readFileSync(join(dir, 'server.pem'), 'utf8') + readFileSync(join(dir, 'server.key'), 'utf8') },
  );
  // psql interpolates :'pw' (quoted safely) only in SQL it reads, not in -c.
  await fleet.exec('pg', 'runuser -u postgres -- psql -q -v ON_ERROR_STOP=1 -v pw="$PW"', { env: { PW: password }, input: "CREATE ROLE convex LOGIN CREATEDB PASSWORD :'pw';\n" });

  const inventory = await fleet.writeInventory('external', {
    hosts: { ext: { postgres: { mode: 'external', url: `postgresql://${ip}:5432`, password_env: 'EXT_PG_PASSWORD', ca_file: join(dir, 'ca.pem') } } },
  });
  const run = await fleet.runScript('install.ts', ['--host', 'ext', '--inventory', inventory], { EXT_PG_PASSWORD: password });
  assert.equal(run.code, 0, run.stdout + run.stderr);
  assert.match(run.stdout, /ext\s+check database\s+ok/);
  assert.equal(await sh('ext', 'dpkg-query -W -f="${db:Status-Status}" postgresql 2>/dev/null || true'), '', 'no local PostgreSQL server in external mode');
  const env = await sh('ext', "docker inspect --format '{{range .Config.Env}}{{println .}}{{end}}' convex-backend");
  assert.doesNotMatch(env, /DO_NOT_REQUIRE_SSL/, 'SSL stays required');
  assert.match(env, /^PG_CA_FILE=\/convex\/pg-ca\.pem$/m);
  assert.match(await sh('ext', 'docker logs convex-backend 2>&1'), /Connected to Postgres database: convex_self_hosted/);
  assert.equal(await sh('pg', `runuser -u postgres -- psql -XAtc "select pg_get_userbyid(datdba) from pg_database where datname='convex_self_hosted'"`), 'convex');

  const again = await fleet.runScript('install.ts', ['--host', 'ext', '--inventory', inventory, '--json'], { EXT_PG_PASSWORD: password });
  assert.equal(parseRunJson(again.stdout).hosts[0]!.recap.changed, 0, again.stdout);
  // The password in every spelling it takes (URL userinfo with upper- or lower-case escapes,
  // JSON-escaped): never in what was printed, the --json document, or the run log.
  const encoded = encodeURIComponent(password);
  const spellings = [password, encoded, encoded.replace(/%[0-9A-F]{2}/g, e => e.toLowerCase()), JSON.stringify(password).slice(1, -1)];
  const log = readFileSync(join(fleet.dir, '.convex-ops', 'convex-ops.log'), 'utf8');
  for (const [where, text] of [['output', run.stdout + run.stderr], ['--json and its output', again.stdout + again.stderr], ['the run log', log]]) {
    for (const spelling of spellings) assert.ok(!text!.includes(spelling), `${where} holds the password as ${spelling}`);
  }
});
