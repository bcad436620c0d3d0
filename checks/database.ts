import type { Check } from '../scripts/lib/check.ts';
import { databaseName } from '../scripts/lib/inventory.ts';
import type { Host } from '../scripts/lib/inventory.ts';
import { sh } from '../scripts/lib/shell.ts';
import { clusterPsql, NEWEST_CLUSTER, PG_CA_PATH } from '../scripts/lib/steps/postgres.ts';

const TABLES = ['documents', 'indexes', 'persistence_globals'];
const query = `select table_name from information_schema.tables where table_schema = 'public' and table_name in (${TABLES.map(t => `'${t}'`).join(', ')})`;

function externalProbe(host: Host): string {
  const url = new URL(host.postgres.url!);
  const ca = host.postgres.ca_file ? PG_CA_PATH(host) : '/etc/ssl/certs/ca-certificates.crt';
  const conninfo = `host=${url.hostname} port=${url.port || 5432} user=${host.postgres.user} dbname=${databaseName(host)} sslmode=verify-full sslrootcert=${ca} connect_timeout=5`;
  // The password is taken from POSTGRES_URL in .env on the droplet and passed in the environment.
  return [
    sh`url=$(sed -n 's/^POSTGRES_URL=//p' ${`${host.root}/.env`})`,
    `pw=\${url#*://*:}; pw=\${pw%%@*}`,
    `PGPASSWORD=$(printf '%b' "$(printf '%s' "$pw" | sed 's/%/\\\\x/g')") psql -XAtq ${sh`${conninfo}`} -c ${sh`${query}`}`,
  ].join('\n');
}

/** The instance's database exists and holds the backend's tables. */
export const database: Check = {
  name: 'database',
  probe: host => (host.postgres.mode === 'local' ? `${NEWEST_CLUSTER}; ${clusterPsql(sh`-XAtq -d ${databaseName(host)} -c ${query}`)}` : externalProbe(host)),
  verdict: (out, code, host) => {
    if (code !== 0) return `cannot query database ${databaseName(host)}`;
    const missing = TABLES.filter(t => !out.split('\n').includes(t));
    return missing.length ? `database ${databaseName(host)} lacks the backend's tables: ${missing.join(', ')}` : undefined;
  },
};
