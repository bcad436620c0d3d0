// The configuration on the droplet as the backend reads it: .env, docker-compose.yml, and in them
// POSTGRES_URL and INSTANCE_NAME.
import type { Host } from '../inventory.ts';
import { composePath, envPath } from '../steps/secret.ts';
import type { DoctorState } from './facts.ts';
import { Findings, run } from './rule.ts';
import type { Context, Finding } from './rule.ts';

const truthy = (value: string | undefined) => /^(1|true|yes|on)$/i.test(value?.trim() ?? '');

export function configFiles(host: Host, state: DoctorState, context: Context): Finding[] {
  const found = new Findings(context.found);
  if (context.composeInvalid) found.add('compose-invalid', 'problem', `${composePath(host)} is not valid YAML, so compose cannot start anything`, `${run(host, 'compose')} rewrites it from the inventory`);
  if (!state.env.present) found.add('env-missing', 'problem', `${envPath(host)} does not exist: the backend has no INSTANCE_SECRET and no database credentials`, `${run(host, 'install')} (the secret step writes it)`);
  if (!state.compose.present) found.add('compose-missing', 'problem', `${composePath(host)} does not exist`, `${run(host, 'install')} (the compose step writes it)`);
  if (context.urlInvalid) found.add('postgres-url-invalid', 'problem', 'POSTGRES_URL is not a URL the backend can read', `${run(host, 'install')} rewrites POSTGRES_URL in ${envPath(host)}`);
  return found.list();
}

export function postgresUrl(host: Host, _state: DoctorState, context: Context): Finding[] {
  const found = new Findings(context.found);
  const { parsedUrl, logged, says, local } = context;
  const urlPath = parsedUrl && parsedUrl.pathname && parsedUrl.pathname !== '/' ? parsedUrl.pathname : undefined;
  if (urlPath || logged.has('postgres-url-db-name')) {
    found.add(
      'postgres-url-db-name',
      'problem',
      `POSTGRES_URL contains a database name (${urlPath ?? logged.get('postgres-url-db-name')?.detail ?? 'a path'}), which Convex refuses: it picks the database (${context.dbName}) from INSTANCE_NAME${says('postgres-url-db-name')}`,
      `remove the database name from POSTGRES_URL (postgresql://user:password@host:5432?sslmode=disable); for this host ${run(host, 'install')} rewrites it in ${envPath(host)} and restarts the backend`,
    );
  }
  if (logged.has('postgres-url-user') || (parsedUrl && !parsedUrl.username)) {
    found.add('postgres-url-user', 'problem', `POSTGRES_URL has no user name${says('postgres-url-user')}`, `${run(host, 'install')} rewrites POSTGRES_URL with the role ${host.postgres.user}`);
  }
  const sslDisabled = parsedUrl?.searchParams.get('sslmode') === 'disable';
  const noRequire = truthy(context.backendEnv.get('DO_NOT_REQUIRE_SSL'));
  if (logged.has('postgres-tls') || (local && parsedUrl && context.compose && (!sslDisabled || !noRequire))) {
    const missing = [!sslDisabled ? 'POSTGRES_URL lacks ?sslmode=disable' : '', !noRequire ? 'the backend lacks DO_NOT_REQUIRE_SSL=true' : ''].filter(Boolean).join(' and ');
    found.add(
      'postgres-tls',
      'problem',
      local
        ? `the backend verifies PostgreSQL's TLS certificate, and the local server's is Debian's self-signed "snakeoil" one${missing ? ` (${missing})` : ''}${says('postgres-tls')}`
        : `the external PostgreSQL's certificate does not verify against the system's CAs${host.postgres.ca_file ? ` nor ${host.postgres.ca_file}` : ''}, or does not name ${parsedUrl?.hostname ?? 'the server'}${says('postgres-tls')}`,
      local
        ? `use both ?sslmode=disable in POSTGRES_URL and DO_NOT_REQUIRE_SSL=true (the bridge never leaves the droplet); ${run(host, 'install')} writes both`
        : `set hosts.${host.name}.postgres.ca_file to your provider's CA certificate (it becomes PG_CA_FILE), check the URL's host name matches the certificate, then ${run(host, 'install')}`,
    );
  }
  if (logged.has('postgres-ssl-required')) {
    found.add(
      'postgres-ssl-required',
      'problem',
      `the backend and PostgreSQL disagree about TLS: one requires it and the other does not offer it${says('postgres-ssl-required')}`,
      local
        ? `for the local server use ?sslmode=disable and DO_NOT_REQUIRE_SSL=true (${run(host, 'install')} writes both)`
        : 'enable TLS on the server (managed databases have it), or, only on a private network, set DO_NOT_REQUIRE_SSL=true and ?sslmode=disable',
    );
  }
  return found.list();
}

/** The database the backend asks for: INSTANCE_NAME decides it. */
export function instanceName(host: Host, _state: DoctorState, context: Context): Finding[] {
  const found = new Findings(context.found);
  const { dbName, ownDb, hbaDb, says } = context;
  if (context.renamed) {
    const name = context.instanceName!;
    found.add(
      'instance-name',
      'problem',
      `${composePath(host)} sets INSTANCE_NAME=${name} where the inventory says ${host.instance_name}, so the backend uses database ${dbName} instead of ${ownDb}` +
        `${context.local && hbaDb === dbName ? ' (which pg_hba.conf does not let it reach)' : ''} and refuses admin keys made for ${host.instance_name}${says('postgres-db-missing') || says('postgres-hba')}`,
      `${run(host, 'install')} puts INSTANCE_NAME=${host.instance_name} back; to move to ${name} instead, set instance_name = "${name}" in the inventory and run ${run(host, 'install')} (it creates ${dbName})`,
    );
  } else if (hbaDb && hbaDb !== ownDb) {
    found.add('postgres-wrong-database', 'problem', `the backend asks PostgreSQL for database ${hbaDb}, but this host's database is ${ownDb} (from instance_name ${host.instance_name})${says('postgres-hba')}`, `check INSTANCE_NAME in ${composePath(host)} and ${envPath(host)}; ${run(host, 'install')} puts INSTANCE_NAME=${host.instance_name} back`);
  }
  return found.list();
}
