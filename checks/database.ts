import type { Check } from '../scripts/lib/check.ts';
import { databaseName } from '../scripts/lib/inventory.ts';
import type { Host } from '../scripts/lib/inventory.ts';
import { sh } from '../scripts/lib/shell.ts';
import { clusterPsql, externalConninfo, NEWEST_CLUSTER } from '../scripts/lib/steps/postgres.ts';

const TABLES = ['documents', 'indexes', 'persistence_globals'];
const query = `select table_name from information_schema.tables where table_schema = 'public' and table_name in (${TABLES.map(t => `'${t}'`).join(', ')})`;

const PERCENT_DECODE =
  'function hex(h, i, v) { v = 0; h = toupper(h); for (i = 1; i <= 2; i++) v = v * 16 + index("0123456789ABCDEF", substr(h, i, 1)) - 1; return v } ' +
  '{ s = $0; out = ""; while (match(s, /%[0-9A-Fa-f][0-9A-Fa-f]/)) { out = out substr(s, 1, RSTART - 1) sprintf("%c", hex(substr(s, RSTART + 1, 2))); s = substr(s, RSTART + 3) } printf "%s", out s }';

function externalProbe(host: Host): string {
  const settings = externalConninfo(host, databaseName(host), 5);
  // The password is taken from POSTGRES_URL in .env on the droplet and passed in the environment.
  return [
    sh`url=$(sed -n 's/^POSTGRES_URL=//p' ${`${host.root}/.env`})`,
    `pw=\${url#*://*:}; pw=\${pw%%@*}`,
    // Percent-decoding in awk: dash's printf %b knows no \\x escapes.
    `PGPASSWORD=$(printf '%s' "$pw" | awk ${sh`${PERCENT_DECODE}`}) psql -XAtq ${sh`${settings}`} -c ${sh`${query}`}`,
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
