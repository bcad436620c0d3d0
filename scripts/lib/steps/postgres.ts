// PostgreSQL for Convex. Local mode: the distribution's server on the droplet, a role and a
// database of our own, one marked pg_hba.conf block for the Docker subnets, and listen_addresses
// limited to localhost plus the Docker bridge. Nothing else in the cluster is ever touched.
// External mode (a managed server over verified TLS) is in postgres-external.ts.
import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto';
import type { Host } from '../inventory.ts';
import { databaseName } from '../inventory.ts';
import type { Fact, Step } from '../step.ts';
import { pendingHandlers } from '../step.ts';
import { fileFact, MANAGED_MARKER, readFileScript, tempPrefix } from '../files.ts';
import type { FileState } from '../files.ts';
import type { Change, Handler } from '../plan.ts';
import { fileChanges, packageChanges, pendingMark, phase, skip, withHandler } from '../plan.ts';
import { exitWhen, initSystem, installedPackages, serviceScript, SYSTEMD_RELOAD, systemdReload } from '../system.ts';
import { renderTemplate, templateText } from '../templates.ts';
import { lines, script, sh } from '../shell.ts';
import type { Script } from '../shell.ts';
import { dockerNetworks } from './docker.ts';
import type { DockerNetworks } from './docker.ts';
import { envPath, parseEnv } from './secret.ts';
import { postgresExternal } from './postgres-external.ts';

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
export const NEWEST_CLUSTER: Script =
  sh`v=; for p in /etc/postgresql/*/; do p=\${p%/}; p=\${p##*/}; case "$p" in ''|*[!0-9.]*) continue ;; esac; \
if [ -z "$v" ] || [ "\${p%%.*}" -gt "\${v%%.*}" ] || { [ "\${p%%.*}" -eq "\${v%%.*}" ] && [ "\${p#*.}" -gt "\${v#*.}" ]; }; then v=$p; fi; done`;

/**
 * psql against cluster $v/main, as postgres: that version's own binary on the cluster's port
 * (postgresql.conf, then conf.d, the last setting winning), which is what pg_wrapper would run
 * but without starting Perl; pg_wrapper itself when that fails. `args` are quoted already.
 */
export function clusterPsql(args: Script): Script {
  const bin = sh`"/usr/lib/postgresql/$v/bin/psql"`;
  const port = sh`p=$(sed -n '/^[[:space:]]*port[[:space:]]*=/{s/^[^=]*=[[:space:]]*\\([0-9]*\\).*/\\1/;h;};\${x;p;}' "/etc/postgresql/$v/main/postgresql.conf" "/etc/postgresql/$v/main/conf.d/"*.conf 2>/dev/null)`;
  return script`{ [ -x ${bin} ] && { ${port}; runuser -u postgres -- ${bin} -p "\${p:-5432}" ${args}; }; } || runuser -u postgres -- psql --cluster "$v/main" ${args}`;
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
    command: lines(
      NEWEST_CLUSTER,
      sh`[ -n "$v" ] || exit 0`,
      sh`echo "version $v"`,
      // A cluster that answers is online. pg_lsclusters (Perl, slow to start) only says why not.
      script`if out=$(${clusterPsql(sh`-XAtq -F '\t' -c ${query}`)}); then echo 'status online'; printf '%s\n' "$out"; else \
pg_lsclusters -h 2>/dev/null | awk -v v="$v" '$1 == v && $2 == "main" { print "status " $4 }'; fi`,
      // What it really listens on: at boot it may have started before the Docker bridge existed.
      sh`if s=$(ss -Hltn 2>/dev/null); then echo sockets; printf '%s\n' "$s" | awk '{ print "socket " $4 }'; fi`,
    ),
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

/**
 * Stands for the cluster's version in a path, replaced by the shell's "$v" on the host: made of
 * letters only, it is left unquoted in fileFact's command, where "$v" expands.
 */
const VERSION = 'CONVEXOPSPGVERSION';

/**
 * A file of the newest cluster's configuration, read in the same command as everything else:
 * its path holds the version, which only the host knows, so the version is found there and the
 * file read as fileFact reads it. Read in one batch with clusterFact, it is that cluster's file.
 */
export function newestClusterFile(name: string): Fact<{ version?: string; state?: FileState }> {
  const path = `${confDir(VERSION)}/${name}`;
  const template = fileFact(path);
  // The parts around the version are plain words, which sh leaves as they are.
  const withVersion = (text: string) => {
    const [before, after] = text.split(VERSION) as [string, string];
    return script`${sh`${before}`}"$v"${sh`${after}`}`;
  };
  return {
    key: `postgres-newest:${name}`,
    command: lines(NEWEST_CLUSTER, sh`[ -n "$v" ] || exit 0`, sh`echo "version $v"`, readFileScript(withVersion(path), withVersion(tempPrefix(path)))),
    parse: (out, code) => {
      const newline = out.indexOf('\n');
      const version = /^version (\S+)$/.exec(newline < 0 ? out : out.slice(0, newline))?.[1];
      return version && newline >= 0 ? { version, state: template.parse(out.slice(newline + 1), code) } : {};
    },
  };
}

/** How long PostgreSQL may take to load its configuration after pg_reload_conf(). */
const POSTGRES_RELOAD_SECONDS = 10;

/**
 * pg_reload_conf() only signals the postmaster, which re-reads postgresql.conf and pg_hba.conf a
 * moment later. A new session reports the postmaster's pg_conf_load_time(), and the postmaster
 * forks no session in the middle of a reload, so once a new session reports a newer time than
 * before, new connections meet the new pg_hba.conf. One subshell, so `&& …` can follow it.
 */
export function reloadPostgresScript(): Script {
  const psql = (sql: string) => sh`runuser -u postgres -- psql -XAtq -c ${sql}`;
  return lines(
    sh`(`,
    script`before=$(${psql('select pg_conf_load_time()')}) || exit 1`,
    script`${psql('select pg_reload_conf()')} >/dev/null || exit 1`,
    exitWhen(
      script`now=$(${psql('select pg_conf_load_time()')}) && [ "$now" != "$before" ]`,
      POSTGRES_RELOAD_SECONDS,
      `PostgreSQL did not load its configuration within ${POSTGRES_RELOAD_SECONDS} s after pg_reload_conf(), so pg_hba.conf may not be in force yet`,
    ),
    sh`)`,
  );
}

const noCluster = () => new Error('PostgreSQL is installed but no cluster was found under /etc/postgresql. Create one with pg_createcluster, then run again.');

/** The cluster, which later phases read only while it runs: a stopped one shows no roles or settings. */
function runningCluster(cluster: ClusterState): ClusterState & { version: string } {
  const { version } = cluster;
  if (!version) throw noCluster();
  if (!cluster.online) throw new Error(`PostgreSQL ${version} is not running, so its roles and settings cannot be read. Start it (pg_ctlcluster ${version} main start), then run again.`);
  return { ...cluster, version };
}

/** How long PostgreSQL may take to accept connections once started. */
const POSTGRES_START_SECONDS = 30;

export function planCluster({ cluster }: { cluster: ClusterState }): Change[] {
  if (!cluster.version) throw noCluster();
  if (cluster.online) return [];
  return [{
    label: `start PostgreSQL ${cluster.version}`,
    script: script`${serviceScript('postgresql', 'enable-start')}\n${exitWhen(sh`pg_isready -q`, POSTGRES_START_SECONDS, `PostgreSQL did not start within ${POSTGRES_START_SECONDS}s`)}`,
  }];
}

/** SQL run by the postgres superuser, read from stdin (a verifier in it stays out of `ps`). */
const asPostgres = (label: string, sql: string): Change => ({ label, script: sh`runuser -u postgres -- psql -X -v ON_ERROR_STOP=1 -q`, stdin: sql });

/** Our role with the password in .env, and our database owned by it; anyone else's is refused, never changed. */
export function planRoleAndDatabase({ cluster, env }: { cluster: ClusterState; env: FileState }, host: Host): Change[] {
  const { role: existing, database } = runningCluster(cluster);
  const role = host.postgres.user;
  const db = databaseName(host);
  const password = env.kind === 'file' ? parseEnv(env.content).get('POSTGRES_PASSWORD') : undefined;
  // The secret step writes it before this step in every play that runs this one, so only a dry
  // run (planned before that write) meets .env without it: the role cannot be compared yet.
  if (!password) skip(`POSTGRES_PASSWORD is not in ${envPath(host)} yet (scripts/secret.ts writes it), so role ${role} cannot be checked`);
  const changes: Change[] = [];
  if (!existing) {
    changes.push(asPostgres(`create role ${role}`, `CREATE ROLE ${role} LOGIN PASSWORD '${scramVerifier(password)}';\nCOMMENT ON ROLE ${role} IS '${ROLE_COMMENT}';\n`));
  } else if (!verifierMatches(existing.verifier, role, password)) {
    if (!existing.ours) {
      throw new Error(
        `role ${role} already exists, was not created by convex-ops, and its password differs from POSTGRES_PASSWORD in ${host.root}/.env. ` +
          `Another application may use it, so it is left alone: put its password in .env as POSTGRES_PASSWORD, or set hosts.${host.name}.postgres.user to a new role.`,
      );
    }
    changes.push(asPostgres(`set the password of role ${role}`, `ALTER ROLE ${role} PASSWORD '${scramVerifier(password)}';\n`));
  }
  if (database && database.owner !== role) {
    throw new Error(
      `database ${db} is owned by ${database.owner}, not ${role}. It is left alone: set hosts.${host.name}.postgres.user = "${database.owner}" to use it, or pick another instance_name.`,
    );
  }
  if (!database) changes.push(asPostgres(`create database ${db} owned by ${role}`, `CREATE DATABASE ${db} OWNER ${role};\n`));
  return changes;
}

const RELOAD = 'postgresql-reload';
const RESTART = 'postgresql-restart';
const reloadHandler: Handler = { name: RELOAD, label: 'reload PostgreSQL (pg_hba.conf)', script: reloadPostgresScript() };

/** A restart re-reads pg_hba.conf as well, so it also does a pending reload's work and clears its mark. */
const restartScript = (version: string) =>
  sh`if [ "$(cat /proc/1/comm)" = systemd ]; then systemctl restart ${`postgresql@${version}-main`}; else pg_ctlcluster ${version} main restart; fi && rm -f ${pendingMark(RELOAD)}`;

export interface ConfigurationFacts {
  cluster: ClusterState;
  networks: DockerNetworks;
  hba: { state?: FileState };
  listen: { state?: FileState };
  init: 'systemd' | 'other';
  dropin: FileState;
  pending: string[];
}

/**
 * pg_hba.conf's block for the Docker subnets (a reload), listen_addresses on the bridge (a
 * restart), and under systemd the drop-in that starts PostgreSQL after Docker (daemon-reload).
 */
export function planConfiguration(facts: ConfigurationFacts, host: Host): Change[] {
  const { version, listen: live, port, sockets } = runningCluster(facts.cluster);
  const { bridgeGateway, subnets } = facts.networks;
  if (!bridgeGateway || subnets.length === 0) throw new Error('the Docker bridge was not found, so the subnets to allow are unknown. Run scripts/docker.ts first.');
  const hba = facts.hba.state;
  const listenConf = facts.listen.state;
  if (!hba || !listenConf) throw noCluster();
  const hbaPath = `${confDir(version)}/${HBA_FILE}`;
  if (hba.kind !== 'file') throw new Error(`${hbaPath} is missing.`);
  const listen = `localhost,${bridgeGateway}`;
  const dropin = renderTemplate(templateText('postgresql-after-docker.conf'), { managed: MANAGED_MARKER, gateway: bridgeGateway }, 'postgresql-after-docker.conf');
  let changes = [
    ...fileChanges(hba, { path: hbaPath, content: withHbaBlock(hba.content, host, subnets), mode: '640', owner: 'postgres', label: 'pg_hba.conf' }, RELOAD),
    ...fileChanges(
      listenConf,
      { path: `${confDir(version)}/${LISTEN_FILE}`, content: `# ${MANAGED_MARKER}: the backend containers reach PostgreSQL at host.docker.internal (the Docker bridge).\nlisten_addresses = '${listen}'\n`, mode: '644', owner: 'postgres', label: 'conf.d/convex-ops.conf' },
      RESTART,
    ),
  ];
  if (facts.init === 'systemd') {
    changes = withHandler([...changes, ...fileChanges(facts.dropin, { path: BOOT_ORDER_DROPIN, content: dropin, mode: '644', label: 'postgresql@.service drop-in (start after Docker)' }, SYSTEMD_RELOAD)], systemdReload, facts.pending);
  }
  // listen_addresses only takes effect on a restart. A server that has the setting but no socket
  // on the bridge started before Docker made it: it needs the restart as much as a pending mark.
  const bridgeSocket = `${bridgeGateway}:${port ?? '5432'}`;
  const notOnBridge = live === listen && sockets !== undefined && !sockets.includes(bridgeSocket);
  const why = notOnBridge && !changes.some(c => c.arms === RESTART) ? `it does not listen on ${bridgeSocket}` : `listen_addresses = '${listen}'`;
  const restart: Handler = { name: RESTART, label: `restart PostgreSQL (${why})`, script: restartScript(version) };
  const restarted = withHandler(changes, restart, live !== listen || notOnBridge ? [...facts.pending, RESTART] : facts.pending);
  return restarted.length > changes.length ? restarted : withHandler(changes, reloadHandler, facts.pending);
}

/** Local mode: the packages, the cluster started, the role and database, then its configuration. */
export const postgresLocal: Step = {
  name: 'postgres',
  phases: [
    phase({ facts: () => ({ packages: installedPackages }), plan: ({ packages }) => packageChanges(packages, ['postgresql']) }),
    phase({ facts: (host: Host) => ({ cluster: clusterFact(host) }), plan: planCluster }),
    phase({ facts: (host: Host) => ({ cluster: clusterFact(host), env: fileFact(envPath(host)) }), plan: planRoleAndDatabase }),
    phase({
      facts: (host: Host) => ({
        cluster: clusterFact(host), networks: dockerNetworks, hba: newestClusterFile(HBA_FILE), listen: newestClusterFile(LISTEN_FILE),
        init: initSystem, dropin: fileFact(BOOT_ORDER_DROPIN), pending: pendingHandlers,
      }),
      plan: planConfiguration,
      ok: ({ networks }, host) =>
        `role ${host.postgres.user} and database ${databaseName(host)} in place; pg_hba allows ${networks.subnets.join(', ')}; listening on localhost,${networks.bridgeGateway}`,
    }),
  ],
};

/** The postgres step for a host: its own server (local mode), or a managed one (external). */
export const postgresStep = (host: Host): Step => (host.postgres.mode === 'local' ? postgresLocal : postgresExternal);
