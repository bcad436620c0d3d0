// PostgreSQL for Convex. Local mode: the distribution's server on the droplet, a role and a
// database of our own, one marked pg_hba.conf block for the Docker subnets, and listen_addresses
// limited to localhost plus the Docker bridge. Nothing else in the cluster is ever touched.
// External mode: a managed server reached over verified TLS; only the client is installed.
import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Host } from '../inventory.ts';
import { databaseName } from '../inventory.ts';
import type { Fact, Step, StepContext } from '../step.ts';
import { ensureFile, fileFact, MANAGED_MARKER } from '../files.ts';
import type { FileState } from '../files.ts';
import { ensurePackages, exitWhen, initSystem, installedPackages, serviceScript, SYSTEMD_RELOAD } from '../system.ts';
import { renderTemplate, templateText } from '../templates.ts';
import { sh } from '../shell.ts';
import { dockerNetworks } from './docker.ts';
import { readEnv } from './secret.ts';
import { conninfo } from '../libpq.ts';

export interface ClusterState {
  version?: string;
  online: boolean;
  role?: { verifier: string; ours: boolean };
  database?: { owner: string };
  listen?: string;
  port?: string;
  /** The TCP addresses (address:port) the host listens on now, whatever the configuration says;
   *  undefined when `ss` could not tell. */
  sockets?: string[];
}

const ROLE_COMMENT = MANAGED_MARKER;

/**
 * Sets $v to the newest cluster version under /etc/postgresql (digits and dots), as
 * `ls | sort -V | tail -n 1` would, in the shell alone.
 */
export const NEWEST_CLUSTER =
  'v=; for p in /etc/postgresql/*/; do p=${p%/}; p=${p##*/}; case "$p" in \'\'|*[!0-9.]*) continue ;; esac; ' +
  'if [ -z "$v" ] || [ "${p%%.*}" -gt "${v%%.*}" ] || { [ "${p%%.*}" -eq "${v%%.*}" ] && [ "${p#*.}" -gt "${v#*.}" ]; }; then v=$p; fi; done';

/**
 * psql against cluster $v/main, as postgres: that version's own binary on the cluster's port
 * (postgresql.conf, then conf.d, the last setting winning), which is what pg_wrapper would run
 * but without starting Perl; pg_wrapper itself when that fails. `args` are quoted already.
 */
export function clusterPsql(args: string): string {
  const bin = '"/usr/lib/postgresql/$v/bin/psql"';
  const port = `p=$(sed -n '/^[[:space:]]*port[[:space:]]*=/{s/^[^=]*=[[:space:]]*\\([0-9]*\\).*/\\1/;h;};\${x;p;}' "/etc/postgresql/$v/main/postgresql.conf" "/etc/postgresql/$v/main/conf.d/"*.conf 2>/dev/null)`;
  return `{ [ -x ${bin} ] && { ${port}; runuser -u postgres -- ${bin} -p "\${p:-5432}" ${args}; }; } || runuser -u postgres -- psql --cluster "$v/main" ${args}`;
}

/** Everything about the cluster in one query; names are validated identifiers, safe to inline. */
export function clusterFact(host: Host): Fact<ClusterState> {
  const role = host.postgres.user;
  const db = databaseName(host);
  const query =
    `select 'role', rolname, coalesce(rolpassword, ''), coalesce(shobj_description(oid, 'pg_authid'), '') from pg_authid where rolname = '${role}' ` +
    `union all select 'db', datname, pg_get_userbyid(datdba), '' from pg_database where datname = '${db}' ` +
    `union all select 'listen', setting, '', '' from pg_settings where name = 'listen_addresses' ` +
    `union all select 'port', setting, '', '' from pg_settings where name = 'port'`;
  return {
    key: `postgres:${role}:${db}`,
    command: [
      NEWEST_CLUSTER,
      '[ -n "$v" ] || exit 0',
      'echo "version $v"',
      // A cluster that answers is online. pg_lsclusters (Perl, slow to start) only says why not.
      `if out=$(${clusterPsql(sh`-XAtq -F '\t' -c ${query}`)}); then echo 'status online'; printf '%s\n' "$out"; else ` +
        `pg_lsclusters -h 2>/dev/null | awk -v v="$v" '$1 == v && $2 == "main" { print "status " $4 }'; fi`,
      // What it really listens on: at boot it may have started before the Docker bridge existed.
      `if s=$(ss -Hltn 2>/dev/null); then echo sockets; printf '%s\n' "$s" | awk '{ print "socket " $4 }'; fi`,
    ].join('\n'),
    parse: out => {
      const state: ClusterState = { online: false };
      for (const line of out.split('\n')) {
        const [kind, a = '', b = '', c = ''] = line.includes('\t') ? line.split('\t') : line.split(' ');
        if (kind === 'version') state.version = a;
        else if (kind === 'status') state.online = a === 'online';
        else if (kind === 'role') state.role = { verifier: b, ours: c.includes(ROLE_COMMENT) };
        else if (kind === 'db') state.database = { owner: b };
        else if (kind === 'listen') state.listen = a;
        else if (kind === 'port') state.port = a;
        else if (kind === 'sockets') state.sockets = [];
        else if (kind === 'socket') state.sockets?.push(a);
      }
      return state;
    },
  };
}

/** Whether a stored SCRAM-SHA-256 (or legacy md5) verifier matches a password; no login needed. */
export function verifierMatches(verifier: string, user: string, password: string): boolean {
  const scram = /^SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):(.+)$/.exec(verifier);
  if (scram) {
    const salted = pbkdf2Sync(password, Buffer.from(scram[2]!, 'base64'), Number(scram[1]), 32, 'sha256');
    const storedKey = createHash('sha256').update(createHmac('sha256', salted).update('Client Key').digest()).digest('base64');
    const serverKey = createHmac('sha256', salted).update('Server Key').digest('base64');
    return storedKey === scram[3] && serverKey === scram[4];
  }
  if (verifier.startsWith('md5')) return verifier === 'md5' + createHash('md5').update(password + user).digest('hex');
  return false;
}

/** A SCRAM verifier to send instead of the password, so the password never reaches the server's logs. */
export function scramVerifier(password: string): string {
  const salt = randomBytes(16);
  const iterations = 4096;
  const salted = pbkdf2Sync(password, salt, iterations, 32, 'sha256');
  const storedKey = createHash('sha256').update(createHmac('sha256', salted).update('Client Key').digest()).digest('base64');
  const serverKey = createHmac('sha256', salted).update('Server Key').digest('base64');
  return `SCRAM-SHA-256$${iterations}:${salt.toString('base64')}$${storedKey}:${serverKey}`;
}

const HBA_BEGIN = `# BEGIN ${MANAGED_MARKER} (this block is rewritten on every run)`;
const HBA_END = '# END convex-ops';

/**
 * pg_hba.conf with our one block (replaced in place, or appended once); every other line kept.
 * A file whose markers were damaged by hand (two blocks, or a block without its end) is refused
 * rather than guessed at, so a second block can never be appended.
 */
export function withHbaBlock(current: string, host: Host, subnets: string[]): string {
  const lines = subnets.map(s => `host    ${databaseName(host)}    ${host.postgres.user}    ${s}    scram-sha-256`);
  const block = [HBA_BEGIN, '# Lets the Convex backend containers reach their database over the Docker bridge.', ...lines, HBA_END].join('\n');
  const start = current.indexOf(HBA_BEGIN);
  const end = current.indexOf(HBA_END, start);
  const begins = current.split(HBA_BEGIN).length - 1;
  if (begins > 1 || (start >= 0 && end < 0) || (start < 0 && current.includes(HBA_END))) {
    throw new Error(`pg_hba.conf holds ${begins} "${HBA_BEGIN}" line(s) and ${current.split(HBA_END).length - 1} "${HBA_END}" line(s); it should hold one of each around one block. Fix it by hand, then run again.`);
  }
  if (start >= 0 && end >= 0) return current.slice(0, start) + block + current.slice(end + HBA_END.length);
  return current.replace(/\n*$/, '\n\n') + block + '\n';
}

const confDir = (version: string) => `/etc/postgresql/${version}/main`;
/** Orders every cluster's unit after Docker (systemd only): see files/postgresql-after-docker.conf. */
export const BOOT_ORDER_DROPIN = '/etc/systemd/system/postgresql@.service.d/convex-ops.conf';
const HBA_FILE = 'pg_hba.conf';
const LISTEN_FILE = 'conf.d/convex-ops.conf';

/** Stands for the cluster's version in a path, replaced by the shell's "$v" on the host. */
const VERSION = 'CONVEXOPSPGVERSION';

/** Whether every occurrence of `token` in a sh command is outside single quotes (so "$v" expands there). */
function expandsEverywhere(command: string, token: string): boolean {
  let quoted = false;
  for (let i = 0; i < command.length; i++) {
    if (!quoted && command[i] === '\\') i++;
    else if (command[i] === "'") quoted = !quoted;
    else if (quoted && command.startsWith(token, i)) return false;
  }
  return command.includes(token);
}

/**
 * A file of the newest cluster's configuration, read in the same command as everything else:
 * its path holds the version, which only the host knows, so the version is found there and the
 * file read as fileFact reads it. The step records it as that file's fact (ctx.learn); when it
 * cannot (another version, an unexpected name), the step reads the file itself as before.
 */
export function newestClusterFile(name: string): Fact<{ version?: string; state?: FileState }> {
  const template = fileFact(`${confDir(VERSION)}/${name}`);
  const usable = expandsEverywhere(template.command, VERSION);
  return {
    key: `postgres-newest:${name}`,
    command: usable
      ? [
          NEWEST_CLUSTER,
          '[ -n "$v" ] || exit 0',
          'echo "version $v"',
          template.command.replaceAll(VERSION, '"$v"'),
        ].join('\n')
      : ':',
    parse: (out, code) => {
      const newline = out.indexOf('\n');
      const version = /^version (\S+)$/.exec(newline < 0 ? out : out.slice(0, newline))?.[1];
      return version && newline >= 0 ? { version, state: template.parse(out.slice(newline + 1), code) } : {};
    },
  };
}

async function psqlAsPostgres(ctx: StepContext, sql: string, what: string): Promise<void> {
  await ctx.run('runuser -u postgres -- psql -X -v ON_ERROR_STOP=1 -q', what, { stdin: sql });
}

/** How long PostgreSQL may take to load its configuration after pg_reload_conf(). */
const POSTGRES_RELOAD_SECONDS = 10;

/**
 * pg_reload_conf() only signals the postmaster, which re-reads postgresql.conf and pg_hba.conf a
 * moment later. A new session reports the postmaster's pg_conf_load_time(), and the postmaster
 * forks no session in the middle of a reload, so once a new session reports a newer time than
 * before, new connections meet the new pg_hba.conf. One subshell, so `&& …` can follow it.
 */
export function reloadPostgresScript(): string {
  const psql = (sql: string) => sh`runuser -u postgres -- psql -XAtq -c ${sql}`;
  return [
    '(',
    `before=$(${psql('select pg_conf_load_time()')}) || exit 1`,
    `${psql('select pg_reload_conf()')} >/dev/null || exit 1`,
    exitWhen(
      `now=$(${psql('select pg_conf_load_time()')}) && [ "$now" != "$before" ]`,
      POSTGRES_RELOAD_SECONDS,
      `PostgreSQL did not load its configuration within ${POSTGRES_RELOAD_SECONDS} s after pg_reload_conf(), so pg_hba.conf may not be in force yet`,
    ),
    ')',
  ].join('\n');
}

async function localMode(ctx: StepContext): Promise<string> {
  const { host } = ctx;
  const role = host.postgres.user;
  const db = databaseName(host);
  if (await ensurePackages(ctx, ['postgresql'])) {
    if (ctx.check) return '';
  }
  let cluster = await ctx.fact(clusterFact(host));
  if (!cluster.version) throw new Error('PostgreSQL is installed but no cluster was found under /etc/postgresql. Create one with pg_createcluster, then run again.');
  if (!cluster.online) {
    await ctx.change(`start PostgreSQL ${cluster.version}`, () =>
      ctx.run(`${serviceScript('postgresql', 'enable-start')}; for i in $(seq 30); do pg_isready -q && exit 0; sleep 1; done; echo 'PostgreSQL did not start within 30s' >&2; exit 1`, 'start postgresql'),
    );
    cluster = await ctx.fact(clusterFact(host));
    if (ctx.check) return '';
  }

  const password = (await readEnv(ctx)).get('POSTGRES_PASSWORD');
  if (!password) {
    if (ctx.check) return '';
    throw new Error('POSTGRES_PASSWORD is missing from .env. Run scripts/secret.ts first.');
  }
  if (!cluster.role) {
    await ctx.change(`create role ${role}`, () =>
      psqlAsPostgres(ctx, `CREATE ROLE ${role} LOGIN PASSWORD '${scramVerifier(password)}';\nCOMMENT ON ROLE ${role} IS '${ROLE_COMMENT}';\n`, `create role ${role}`),
    );
  } else if (!verifierMatches(cluster.role.verifier, role, password)) {
    if (!cluster.role.ours) {
      throw new Error(
        `role ${role} already exists, was not created by convex-ops, and its password differs from POSTGRES_PASSWORD in ${host.root}/.env. ` +
          `Another application may use it, so it is left alone: put its password in .env as POSTGRES_PASSWORD, or set hosts.${host.name}.postgres.user to a new role.`,
      );
    }
    await ctx.change(`set the password of role ${role}`, () => psqlAsPostgres(ctx, `ALTER ROLE ${role} PASSWORD '${scramVerifier(password)}';\n`, `set password of ${role}`));
  }
  if (!cluster.database) {
    await ctx.change(`create database ${db} owned by ${role}`, () => psqlAsPostgres(ctx, `CREATE DATABASE ${db} OWNER ${role};\n`, `create database ${db}`));
  } else if (cluster.database.owner !== role) {
    throw new Error(
      `database ${db} is owned by ${cluster.database.owner}, not ${role}. It is left alone: set hosts.${host.name}.postgres.user = "${cluster.database.owner}" to use it, or pick another instance_name.`,
    );
  }

  const networks = await ctx.fact(dockerNetworks);
  if (!networks.bridgeGateway || networks.subnets.length === 0) {
    if (ctx.check) return '';
    throw new Error('the Docker bridge was not found, so the subnets to allow are unknown. Run scripts/docker.ts first.');
  }
  const dir = confDir(cluster.version!);
  const hbaPath = `${dir}/${HBA_FILE}`;
  const listenPath = `${dir}/${LISTEN_FILE}`;
  for (const [name, path] of [[HBA_FILE, hbaPath], [LISTEN_FILE, listenPath]] as const) {
    const newest = ctx.peek(newestClusterFile(name));
    if (newest?.state && newest.version === cluster.version) ctx.learn(fileFact(path), newest.state);
  }
  await ctx.facts([fileFact(hbaPath), fileFact(listenPath)]);
  const hba = await ctx.fact(fileFact(hbaPath));
  if (hba.kind !== 'file') throw new Error(`${hbaPath} is missing.`);
  const wantedHba = withHbaBlock(hba.content, host, networks.subnets);
  if (wantedHba !== hba.content) await ctx.markPending('postgresql-reload');
  await ensureFile(ctx, { path: hbaPath, content: wantedHba, mode: '640', owner: 'postgres', label: 'pg_hba.conf' });
  const listen = `localhost,${networks.bridgeGateway}`;
  const listenConf = `# ${MANAGED_MARKER}: the backend containers reach PostgreSQL at host.docker.internal (the Docker bridge).\nlisten_addresses = '${listen}'\n`;
  const confChanged = await ensureFile(ctx, { path: listenPath, content: listenConf, mode: '644', owner: 'postgres', label: 'conf.d/convex-ops.conf' });
  if ((await ctx.fact(initSystem)) === 'systemd') {
    const dropin = renderTemplate(templateText('postgresql-after-docker.conf'), { managed: MANAGED_MARKER, gateway: networks.bridgeGateway }, 'postgresql-after-docker.conf');
    const dropinState = await ctx.fact(fileFact(BOOT_ORDER_DROPIN));
    if (dropinState.kind !== 'file' || dropinState.content !== dropin) await ctx.markPending(SYSTEMD_RELOAD);
    await ensureFile(ctx, { path: BOOT_ORDER_DROPIN, content: dropin, mode: '644', label: 'postgresql@.service drop-in (start after Docker)' });
    await ctx.runPending(SYSTEMD_RELOAD, 'reload systemd units', 'systemctl daemon-reload');
  }
  const bridgeSocket = `${networks.bridgeGateway}:${cluster.port ?? '5432'}`;
  const notOnBridge = cluster.listen === listen && cluster.sockets !== undefined && !cluster.sockets.includes(bridgeSocket);
  if (confChanged || cluster.listen !== listen || notOnBridge) {
    // listen_addresses only takes effect on a restart; a restart also re-reads pg_hba.conf. A
    // server that has the setting but no socket on the bridge started before Docker made it.
    const why = notOnBridge && !confChanged ? `it does not listen on ${bridgeSocket}` : `listen_addresses = '${listen}'`;
    await ctx.change(`restart PostgreSQL (${why})`, () =>
      ctx.run(
        `if [ "$(cat /proc/1/comm)" = systemd ]; then systemctl restart postgresql@${cluster.version}-main; else pg_ctlcluster ${cluster.version} main restart; fi && rm -f /var/lib/convex-ops/pending/postgresql-reload`,
        'restart postgresql',
      ),
    );
  }
  await ctx.runPending('postgresql-reload', 'reload PostgreSQL (pg_hba.conf)', reloadPostgresScript());
  return `role ${role} and database ${db} in place; pg_hba allows ${networks.subnets.join(', ')}; listening on ${listen}`;
}

export const PG_CA_PATH = (host: Host) => `${host.root}/config/pg-ca.pem`;

/** The CA file psql verifies the external server with: the inventory's, else the system's. */
export const externalCaPath = (host: Host) => (host.postgres.ca_file ? PG_CA_PATH(host) : '/etc/ssl/certs/ca-certificates.crt');

/** libpq settings for the external server, TLS always verified (certificate and host name). */
export function externalConninfo(host: Host, database: string, connectTimeout: number): string {
  const url = new URL(host.postgres.url!);
  return conninfo({
    host: url.hostname, port: url.port || 5432, user: host.postgres.user, dbname: database,
    sslmode: 'verify-full', sslrootcert: externalCaPath(host), connect_timeout: connectTimeout,
  });
}

async function externalMode(ctx: StepContext): Promise<string> {
  const { host } = ctx;
  const db = databaseName(host);
  await ensurePackages(ctx, ['postgresql-client']);
  const caPath = externalCaPath(host);
  if (host.postgres.ca_file) {
    await ensureFile(ctx, { path: caPath, content: readFileSync(host.postgres.ca_file, 'utf8'), mode: '644', label: 'the PostgreSQL CA file' });
  }
  if (ctx.check) return `would check that database ${db} exists on ${new URL(host.postgres.url!).host}`;
  const url = new URL(host.postgres.url!);
  const settings = externalConninfo(host, 'postgres', 10);
  // The password travels on stdin, never in a command line that `ps` would show.
  const probe = await ctx.run(
    `IFS= read -r PGPASSWORD; export PGPASSWORD; psql -XAtq ${sh`${settings}`} -c ${sh`${`select 1 from pg_database where datname = '${db}'`}`}`,
    `connect to ${url.host}`,
    { stdin: process.env[host.postgres.password_env!] + '\n', allowFail: true },
  );
  if (probe.code !== 0) {
    throw new Error(`cannot reach the external PostgreSQL at ${url.host} as ${host.postgres.user} with verified TLS: ${probe.stderr.trim()}`);
  }
  if (probe.stdout.trim() !== '1') {
    await ctx.change(`create database ${db} on ${url.host}`, () =>
      ctx.run(`IFS= read -r PGPASSWORD; export PGPASSWORD; psql -XAtq -v ON_ERROR_STOP=1 ${sh`${settings}`} -c ${sh`${`CREATE DATABASE ${db}`}`}`, `create database ${db}`, {
        stdin: process.env[host.postgres.password_env!] + '\n',
      }),
    );
  }
  return `database ${db} on ${url.host}, TLS verified`;
}

export const postgres: Step = {
  name: 'postgres',
  facts: host =>
    host.postgres.mode === 'local'
      ? [installedPackages, clusterFact(host), dockerNetworks, newestClusterFile(HBA_FILE), newestClusterFile(LISTEN_FILE), initSystem, fileFact(BOOT_ORDER_DROPIN)]
      : [installedPackages],
  run: ctx => (ctx.host.postgres.mode === 'local' ? localMode(ctx) : externalMode(ctx)),
};
