import type { Check } from '../scripts/lib/check.ts';
import { databaseName } from '../scripts/lib/inventory.ts';
import type { Host } from '../scripts/lib/inventory.ts';
import { script, sh } from '../scripts/lib/shell.ts';
import { clusterPsql, NEWEST_CLUSTER } from '../scripts/lib/steps/postgres.ts';
import { externalConninfo, withEnvPassword } from '../scripts/lib/steps/postgres-external.ts';

const TABLES = ['documents', 'indexes', 'persistence_globals'];
const query = `select table_name from information_schema.tables where table_schema = 'public' and table_name in (${TABLES.map(t => `'${t}'`).join(', ')})`;

const externalProbe = (host: Host) => withEnvPassword(host, sh`psql -XAtq ${externalConninfo(host, databaseName(host), 5)} -c ${query}`);

/** The instance's database exists and holds the backend's tables. */
export const database: Check = {
  name: 'database',
  probe: host => (host.postgres.mode === 'local' ? script`${NEWEST_CLUSTER}; ${clusterPsql(sh`-XAtq -d ${databaseName(host)} -c ${query}`)}` : externalProbe(host)),
  verdict: (out, code, host) => {
    if (code !== 0) return `cannot query database ${databaseName(host)}`;
    const missing = TABLES.filter(t => !out.split('\n').includes(t));
    return missing.length ? `database ${databaseName(host)} lacks the backend's tables: ${missing.join(', ')}` : undefined;
  },
};
