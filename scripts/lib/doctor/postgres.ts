// PostgreSQL: the local server (installed, running, listening on the Docker bridge, pg_hba), its
// database, and the backend's connection to it as POSTGRES_URL and the log describe it.
import type { Host } from '../inventory.ts';
import { envPath } from '../steps/secret.ts';
import type { DoctorState } from './facts.ts';
import { Findings, run } from './rule.ts';
import type { Context, Finding } from './rule.ts';
import { cidrCovers } from '../facts/cidr.ts';

const subnetCovered = (subnet: string, allowed: string[]) => allowed.some(a => a === subnet || cidrCovers(a, subnet));

const recreate = (host: Host, db: string) => `${run(host, 'postgres')} creates an empty ${db}; if its data is in a database of another name (renamed, restored elsewhere), rename that one back instead (ALTER DATABASE … RENAME TO ${db})`;

/** The local server: installed, running, and listening where the containers reach it. */
export function postgresServer(host: Host, state: DoctorState, context: Context): Finding[] {
  const pg = state.postgres;
  if (!context.local || !pg) return [];
  const found = new Findings(context.found);
  const gateway = state.networks.bridgeGateway;
  const { says } = context;
  if (!pg.installed) {
    found.add('postgres-missing', 'problem', 'PostgreSQL is not installed on the droplet (postgres.mode = "local")', run(host, 'install'));
  } else if (!pg.online) {
    found.add(
      'postgres-down',
      'problem',
      `PostgreSQL ${pg.version}/main is not running, so the backend's connections are refused${says('postgres-refused')}`,
      `start it (systemctl start postgresql@${pg.version}-main, or pg_ctlcluster ${pg.version} main start) and read /var/log/postgresql/postgresql-${pg.version}-main.log if it stops again; ${run(host, 'install')} starts it too`,
    );
  }
  if (pg.installed && pg.listen !== undefined && gateway) {
    const addresses = pg.listen.split(',').map(a => a.trim());
    if (!addresses.includes('*') && !addresses.includes('0.0.0.0') && !addresses.includes(gateway)) {
      found.add(
        'postgres-listen',
        'problem',
        `PostgreSQL listens on '${pg.listen}' only, but the containers reach it at host.docker.internal = ${gateway} (the Docker bridge)${says('postgres-refused')}`,
        `listen_addresses must include ${gateway}: ${run(host, 'install')} writes conf.d/convex-ops.conf (listen_addresses = 'localhost,${gateway}') and restarts PostgreSQL`,
      );
    } else if (pg.online && addresses.includes(gateway) && !state.listeners.some(l => l.address === gateway && l.process === 'postgres')) {
      found.add(
        'postgres-not-on-bridge',
        'problem',
        `listen_addresses includes the Docker bridge ${gateway}, but PostgreSQL is not listening there: it started before Docker had created the bridge (at boot), so binding ${gateway} failed${says('postgres-refused')}`,
        `restart PostgreSQL now that the bridge exists: ${run(host, 'install')} does it, and on systemd it also orders PostgreSQL after Docker so that the next boot binds the bridge`,
      );
    }
  }
  return found.list();
}

/** The local server lets the backend in (pg_hba.conf) and has its database. */
export function postgresAccess(host: Host, state: DoctorState, context: Context): Finding[] {
  const pg = state.postgres;
  if (!context.local || !pg) return [];
  const found = new Findings(context.found);
  const { logged, says, hbaDb, ownDb } = context;
  if (pg.installed && !pg.hbaBlock) {
    found.add(
      'postgres-hba',
      'problem',
      `pg_hba.conf has no convex-ops block, so PostgreSQL rejects the backend's connections from the Docker networks (${state.networks.subnets.join(', ') || 'unknown'})${says('postgres-hba')}`,
      `${run(host, 'install')} puts the block back (host ${context.dbName} ${host.postgres.user} <docker subnet> scram-sha-256) and reloads PostgreSQL`,
    );
  } else if (pg.installed) {
    const uncovered = state.networks.subnets.filter(s => !subnetCovered(s, pg.hbaSubnets));
    // A refusal for another database is INSTANCE_NAME's doing, not the block's.
    if (uncovered.length || (logged.has('postgres-hba') && (!hbaDb || hbaDb === ownDb))) {
      found.add(
        'postgres-hba',
        'problem',
        `pg_hba.conf's convex-ops block does not allow ${uncovered.length ? uncovered.join(', ') : `the backend's address ${logged.get('postgres-hba')?.detail ?? ''}`.trim()}${says('postgres-hba')}`,
        `${run(host, 'install')} rewrites the block for the current Docker subnets and reloads PostgreSQL`,
      );
    }
  }
  if (pg.online && pg.database === false) {
    found.add('postgres-db-missing', 'problem', `database ${ownDb}, which Convex uses for INSTANCE_NAME ${host.instance_name}, does not exist${says('postgres-db-missing')}`, recreate(host, ownDb));
  }
  return found.list();
}

/** compose's extra_hosts maps host.docker.internal to the host's gateway. */
function hasGatewayAlias(compose: unknown): boolean {
  const extraHosts = (compose as { services?: { backend?: { extra_hosts?: unknown } } } | undefined)?.services?.backend?.extra_hosts;
  return Array.isArray(extraHosts)
    ? extraHosts.some(e => /^host\.docker\.internal[:=]host-gateway$/.test(String(e).replace(/\s/g, '')))
    : typeof extraHosts === 'object' && extraHosts !== null && (extraHosts as Record<string, string>)['host.docker.internal'] === 'host-gateway';
}

/** What the backend meets when it connects: the host it names, its password, a refusal. */
export function postgresConnection(host: Host, state: DoctorState, context: Context): Finding[] {
  const found = new Findings(context.found);
  const { parsedUrl, logged, says, local } = context;
  if (local && parsedUrl && !['host.docker.internal', state.networks.bridgeGateway].includes(parsedUrl.hostname)) {
    found.add(
      'postgres-host',
      'problem',
      `POSTGRES_URL points at ${parsedUrl.hostname}; inside the container that is ${/^(localhost|127\.|::1)/.test(parsedUrl.hostname) ? 'the container itself, not the droplet' : 'not the droplet'}${says('postgres-refused')}`,
      `use host.docker.internal (with extra_hosts host.docker.internal:host-gateway); ${run(host, 'install')} rewrites POSTGRES_URL`,
    );
  }
  if (context.compose && parsedUrl?.hostname === 'host.docker.internal' && !hasGatewayAlias(context.compose)) {
    found.add('postgres-resolve', 'problem', `the backend service has no extra_hosts entry host.docker.internal:host-gateway, so host.docker.internal does not resolve in the container${says('postgres-resolve')}`, `${run(host, 'compose')} then ${run(host, 'up')} (the managed compose file has it)`);
  } else if (logged.has('postgres-resolve')) {
    found.add('postgres-resolve', 'problem', `the backend cannot resolve the database host ${parsedUrl?.hostname ?? ''}${says('postgres-resolve')}`, `check the host in POSTGRES_URL; for the local server use host.docker.internal with extra_hosts host.docker.internal:host-gateway (${run(host, 'install')})`);
  }
  if (logged.has('postgres-db-missing') && !found.has('postgres-db-missing') && !context.renamed) {
    const named = logged.get('postgres-db-missing')!.detail ?? context.dbName;
    found.add(
      'postgres-db-missing',
      'problem',
      `database ${named} does not exist: Convex uses INSTANCE_NAME (${context.instanceName ?? host.instance_name}) with "-" as "_" as the database name${says('postgres-db-missing')}`,
      local ? recreate(host, named) : `create database ${named} on the external server (CREATE DATABASE ${named}), or ${run(host, 'postgres')} with a role allowed to`,
    );
  }
  if (logged.has('postgres-password')) {
    found.add('postgres-password', 'problem', `PostgreSQL refuses the password in POSTGRES_URL for role ${logged.get('postgres-password')!.detail ?? host.postgres.user}${says('postgres-password')}`, local ? `${run(host, 'postgres')} sets the role's password to POSTGRES_PASSWORD from ${envPath(host)}` : `put the right password in the variable named by hosts.${host.name}.postgres.password_env, then ${run(host, 'install')}`);
  }
  if (logged.has('postgres-refused') && !found.ids().some(id => ['postgres-down', 'postgres-listen', 'postgres-not-on-bridge', 'postgres-host', 'postgres-missing'].includes(id))) {
    const gateway = state.networks.bridgeGateway;
    found.add(
      'postgres-refused',
      'problem',
      `the backend's connection to PostgreSQL is refused${says('postgres-refused')}`,
      local
        ? `check that PostgreSQL runs and listens on the Docker bridge (listen_addresses = 'localhost,${gateway ?? '<bridge gateway>'}'), that pg_hba.conf allows the Docker subnets, and that POSTGRES_URL uses host.docker.internal; ${run(host, 'install')} sets all three`
        : `check that ${parsedUrl?.host ?? 'the server'} accepts connections from this droplet (the provider's trusted sources / firewall)`,
    );
  }
  return found.list();
}
