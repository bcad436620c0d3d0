// PostgreSQL for Convex, external mode: a managed server reached over verified TLS (certificate
// and host name); on the droplet only the client is installed, and the instance's database is
// created on the server when it is missing. Nothing else on that server is touched.
import { readFileSync } from 'node:fs';
import type { Host } from '../inventory.ts';
import { databaseName } from '../inventory.ts';
import type { Fact, Step } from '../step.ts';
import { fileFact } from '../files.ts';
import type { FileState } from '../files.ts';
import type { Change } from '../plan.ts';
import { fileChanges, packageChanges, phase } from '../plan.ts';
import { installedPackages } from '../system.ts';
import { lines, script, sh } from '../shell.ts';
import type { Script } from '../shell.ts';
import { conninfo } from '../libpq.ts';
import { envPath, parseEnv, postgresUrl } from './secret.ts';

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

/** Percent-decoding in awk: dash's printf %b knows no \x escapes. */
const PERCENT_DECODE =
  'function hex(h, i, v) { v = 0; h = toupper(h); for (i = 1; i <= 2; i++) v = v * 16 + index("0123456789ABCDEF", substr(h, i, 1)) - 1; return v } ' +
  '{ s = $0; out = ""; while (match(s, /%[0-9A-Fa-f][0-9A-Fa-f]/)) { out = out substr(s, 1, RSTART - 1) sprintf("%c", hex(substr(s, RSTART + 1, 2))); s = substr(s, RSTART + 3) } printf "%s", out s }';

/**
 * `command` (a psql) run with PGPASSWORD taken from POSTGRES_URL in the droplet's .env, which
 * only root reads (mode 0600): the password reaches it in the environment, never in a command
 * line that `ps` shows, and a command that has no stdin of its own (a fact, a check) can use it.
 */
export function withEnvPassword(host: Host, command: Script): Script {
  return lines(
    sh`url=$(sed -n 's/^POSTGRES_URL=//p' ${envPath(host)})`,
    sh`pw=\${url#*://*:}; pw=\${pw%%@*}`,
    script`PGPASSWORD=$(printf '%s' "$pw" | awk ${sh`${PERCENT_DECODE}`}) ${command}`,
  );
}

export interface ExternalDatabase {
  /** The server answered, over verified TLS, as our user. */
  reached: boolean;
  exists: boolean;
  /** What psql said when it did not. */
  error: string;
}

/**
 * Whether the instance's database exists on the external server. A fact (it waits on the
 * network, beside the other facts) has no stdin, so the password comes from .env (withEnvPassword).
 */
export function externalDatabaseFact(host: Host): Fact<ExternalDatabase> {
  const query = `select 1 from pg_database where datname = '${databaseName(host)}'`;
  const psql = withEnvPassword(host, sh`psql -XAtq ${externalConninfo(host, 'postgres', 10)} -c ${query} 2>&1`);
  return {
    key: `postgres-external:${host.postgres.url}:${host.postgres.user}:${databaseName(host)}`,
    waits: true,
    command: script`if out=$(${psql}); then printf 'reached\\n%s\\n' "$out"; else printf 'failed\\n%s\\n' "$out"; fi`,
    parse: out => {
      const [status, ...rest] = out.split('\n');
      const answer = rest.join('\n').trim();
      return { reached: status === 'reached', exists: status === 'reached' && answer === '1', error: status === 'reached' ? '' : answer };
    },
  };
}

/** Creates the database unless it exists; the password from this machine arrives on stdin. */
function createExternalDatabaseScript(host: Host): Script {
  const db = databaseName(host);
  const psql = sh`psql -XAtq -v ON_ERROR_STOP=1 ${externalConninfo(host, 'postgres', 10)}`;
  return lines(
    sh`IFS= read -r PGPASSWORD; export PGPASSWORD`,
    script`exists=$(${psql} -c ${sh`${`select 1 from pg_database where datname = '${db}'`}`}) || exit 1`,
    script`[ "$exists" = 1 ] || ${psql} -c ${sh`${`CREATE DATABASE ${db}`}`}`,
  );
}

export function planExternalDatabase({ database, env }: { database: ExternalDatabase; env: FileState }, host: Host): Change[] {
  const db = databaseName(host);
  const server = new URL(host.postgres.url!).host;
  const password = process.env[host.postgres.password_env!]!;
  const create = (label: string): Change[] => [{ label, script: createExternalDatabaseScript(host), stdin: password + '\n' }];
  // The probe used the password in .env, which the secret step (run before this one) writes
  // from this machine's: only a dry run, planned before that write, meets another one. What
  // the probe said then is not the answer, and the change checks again before it creates.
  const written = env.kind === 'file' ? parseEnv(env.content).get('POSTGRES_URL') : undefined;
  if (written !== postgresUrl(host, password)) return create(`create database ${db} on ${server} unless it exists`);
  if (!database.reached) throw new Error(`cannot reach the external PostgreSQL at ${server} as ${host.postgres.user} with verified TLS: ${database.error}`);
  return database.exists ? [] : create(`create database ${db} on ${server}`);
}

/** External mode: the client and the CA file, then the database on the server. */
export const postgresExternal: Step = {
  name: 'postgres',
  phases: [
    phase({
      facts: (host: Host) => ({ packages: installedPackages, ca: fileFact(PG_CA_PATH(host)) }),
      plan: ({ packages, ca }, host) => [
        ...packageChanges(packages, ['postgresql-client']),
        ...(host.postgres.ca_file ? fileChanges(ca, { path: PG_CA_PATH(host), content: readFileSync(host.postgres.ca_file, 'utf8'), mode: '644', label: 'the PostgreSQL CA file' }) : []),
      ],
    }),
    phase({
      facts: (host: Host) => ({ database: externalDatabaseFact(host), env: fileFact(envPath(host)) }),
      plan: planExternalDatabase,
      ok: (_, host) => `database ${databaseName(host)} on ${new URL(host.postgres.url!).host}, TLS verified`,
    }),
  ],
};

