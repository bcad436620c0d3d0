// doctor: why is this deployment broken? One remote command reads the backend's logs, the
// containers' state and the host's state (ports, disk, PostgreSQL, DNS, certificate, admin key);
// a pure function turns that into findings, each naming a cause and its fix.
//
// Read-only by design: doctor takes no run lock (it must work while a run hangs or holds the
// lock, and it writes nothing), never restarts anything, and every line it prints is redacted
// (the .env it reads registers INSTANCE_SECRET, the database password and the admin key).
import { existsSync, readFileSync } from 'node:fs';
import YAML from 'yaml';
import type { Host } from './inventory.ts';
import { databaseName } from './inventory.ts';
import type { Fact } from './step.ts';
import { gatherFacts, Readings, STATE_DIR } from './step.ts';
import { Connection } from './ssh.ts';
import { MANAGED_MARKER } from './files.ts';
import { sh } from './shell.ts';
import { redact, registerSecret } from './redact.ts';
import { dockerNetworks, dockerState, engineView } from './steps/docker.ts';
import type { DockerNetworks, DockerState } from './steps/docker.ts';
import { composePath, envPath, parseEnv, passwordFromCompose } from './steps/secret.ts';
import type { EnvValues } from './steps/secret.ts';
import { CONTAINERS } from './steps/docker.ts';
import { adminKeyInSettings, localSecretsFile } from './steps/admin-key.ts';

export type Severity = 'problem' | 'warning';

export interface Finding {
  /** Stable name of the cause, e.g. "postgres-url-db-name"; one finding per id and host. */
  id: string;
  severity: Severity;
  cause: string;
  fix: string;
}

// ------------------------------------------------------------------------------------------
// What is read: each a fact (a POSIX sh snippet plus a parser); all go to the host at once.

export interface ContainerInfo {
  name: string;
  status: string;
  restarts: number;
  exitCode: number;
  startedAt: string;
  finishedAt: string;
  image: string;
  /** Docker's start error, e.g. "… Bind for 0.0.0.0:3210 failed: port is already allocated". */
  error: string;
  health?: string;
  /** The output of the last health check. */
  healthOutput?: string;
}

/** The Convex containers as doctor reads them: a view of the engine reading the steps share. */
export const containersInfo: Fact<Map<string, ContainerInfo>> = engineView(engine => containersFrom([engine.backend.doc, engine.dashboard.doc]));

/** Engine documents of containers (as `docker inspect` prints them) by name; .Config.Env (secrets) is not read. */
export function containersFrom(docs: Array<Record<string, any> | undefined>): Map<string, ContainerInfo> {
  const containers = new Map<string, ContainerInfo>();
  for (const doc of docs) {
    if (!doc) continue;
    const state = (doc.State ?? {}) as Record<string, unknown>;
    const health = state.Health as { Status?: string; Log?: Array<{ Output?: string; ExitCode?: number }> } | undefined;
    const last = health?.Log?.[health.Log.length - 1];
    const name = String(doc.Name ?? '').replace(/^\//, '');
    containers.set(name, {
      name,
      status: String(state.Status ?? ''),
      restarts: Number(doc.RestartCount ?? 0),
      exitCode: Number(state.ExitCode ?? 0),
      startedAt: String(state.StartedAt ?? ''),
      finishedAt: String(state.FinishedAt ?? ''),
      image: String(doc.Config?.Image ?? ''),
      error: String(state.Error ?? ''),
      ...(health?.Status ? { health: health.Status } : {}),
      ...(last?.Output ? { healthOutput: last.Output.trim() } : {}),
    });
  }
  return containers;
}

export interface LogLine { time?: number; text: string }

/** How many of the backend's last log lines are read. */
export const LOG_LINES = 300;

export const backendLog: Fact<LogLine[]> = {
  key: 'doctor:backend-log',
  command: sh`docker logs --timestamps --tail ${LOG_LINES} ${CONTAINERS.backend} 2>&1`,
  parse: (out, code) => (code === 0 ? parseLog(out) : []),
};

/** `docker logs --timestamps` lines: "<RFC 3339 nano> <the line>". */
export function parseLog(out: string): LogLine[] {
  return out
    .split('\n')
    .filter(line => line.trim())
    .map(line => {
      const match = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z) (.*)$/.exec(line);
      if (!match) return { text: line };
      const time = Date.parse(match[1]!.replace(/(\.\d{3})\d+Z$/, '$1Z'));
      return Number.isNaN(time) ? { text: match[2]! } : { time, text: match[2]! };
    });
}

export interface Listener { address: string; port: number; process?: string; pid?: number }

export const listeners: Fact<Listener[]> = {
  key: 'doctor:listeners',
  command: 'ss -Hltnp',
  parse: out => parseListeners(out),
};

export function parseListeners(out: string): Listener[] {
  const found: Listener[] = [];
  for (const line of out.split('\n')) {
    const fields = line.trim().split(/\s+/);
    if (fields.length < 4 || fields[0] !== 'LISTEN') continue;
    const local = fields[3]!;
    const cut = local.lastIndexOf(':');
    const port = Number(local.slice(cut + 1));
    if (!Number.isInteger(port)) continue;
    const users = /users:\(\("([^"]+)",pid=(\d+)/.exec(line);
    found.push({ address: local.slice(0, cut), port, ...(users ? { process: users[1]!, pid: Number(users[2]) } : {}) });
  }
  return found;
}

export interface Publication { container: string; address: string; port: number }

/** Ports other running containers publish: one of them may hold a port Convex needs. */
export const publications: Fact<Publication[]> = {
  key: 'doctor:publications',
  command: `docker ps --format '{{.Names}}\t{{.Ports}}'`,
  parse: out => parsePublications(out),
};

export function parsePublications(out: string): Publication[] {
  const found: Publication[] = [];
  for (const line of out.split('\n')) {
    const [container, ports = ''] = line.split('\t');
    if (!container) continue;
    // "127.0.0.1:3210->3210/tcp, 0.0.0.0:80->80/tcp, :::80->80/tcp"
    for (const match of ports.matchAll(/([0-9a-fA-F.:[\]]*):(\d+)->\d+\/tcp/g)) found.push({ container, address: match[1]!, port: Number(match[2]) });
  }
  return found;
}

export interface DiskUsage { path: string; filesystem: string; mount: string; sizeBytes: number; percent: number; availableBytes: number; inodesPercent?: number }

export function diskFact(host: Host): Fact<DiskUsage[]> {
  const paths = [host.volume, '/var/lib/docker', '/'];
  return {
    key: `doctor:disk:${host.volume}`,
    command: `for p in ${sh`${paths}`}; do [ -e "$p" ] || continue; printf 'space %s ' "$p"; df -P -B1 "$p" | tail -n 1; printf 'inodes %s ' "$p"; df -Pi "$p" | tail -n 1; done`,
    parse: out => parseDisk(out),
  };
}

export function parseDisk(out: string): DiskUsage[] {
  const byPath = new Map<string, DiskUsage>();
  for (const line of out.split('\n')) {
    // "space /mnt/x /dev/sda 1000 900 100 90% /mnt/x" and "inodes /mnt/x /dev/sda 10 9 1 90% /mnt/x"
    const fields = line.trim().split(/\s+/);
    if (fields.length < 8) continue;
    const [kind, path, filesystem, size, , avail, percent] = fields as [string, string, string, string, string, string, string];
    const mount = fields.slice(7).join(' ');
    const value = Number(percent.replace('%', ''));
    if (kind === 'space' && Number.isFinite(value)) byPath.set(path, { path, filesystem, mount, sizeBytes: Number(size), percent: value, availableBytes: Number(avail) });
    else if (kind === 'inodes' && Number.isFinite(value) && byPath.has(path)) byPath.get(path)!.inodesPercent = value;
  }
  return [...byPath.values()];
}

export interface TextFile { present: boolean; content: string }

function textFile(key: string, path: string): Fact<TextFile> {
  return {
    key: `doctor:${key}:${path}`,
    command: sh`[ -f ${path} ] || exit 3; cat ${path}`,
    parse: (out, code) => ({ present: code !== 3, content: code === 3 ? '' : out }),
  };
}

export interface PostgresInfo {
  installed: boolean;
  version?: string;
  online: boolean;
  /** listen_addresses as the running server reports it (or, when it is down, as configured). */
  listen?: string;
  hbaBlock: boolean;
  /** Addresses (CIDR) the convex-ops block of pg_hba.conf allows. */
  hbaSubnets: string[];
  /** undefined when the server could not be asked. */
  database?: boolean;
  role?: boolean;
}

export function postgresFact(host: Host): Fact<PostgresInfo> {
  const query = `select 'db', count(*) from pg_database where datname = '${databaseName(host)}' union all select 'role', count(*) from pg_roles where rolname = '${host.postgres.user}'`;
  return {
    key: `doctor:postgres:${databaseName(host)}`,
    command: [
      'v=$(ls -1 /etc/postgresql 2>/dev/null | sort -V | tail -n 1)',
      '[ -n "$v" ] || exit 0',
      'echo "version $v"',
      'd=/etc/postgresql/$v/main',
      `pg_lsclusters -h 2>/dev/null | awk -v v="$v" '$1 == v && $2 == "main" { print "status " $4 }'`,
      `if live=$(runuser -u postgres -- psql -XAtq -c 'show listen_addresses' 2>/dev/null); then echo "listen $live"; ` +
        `else cat "$d/postgresql.conf" "$d"/conf.d/*.conf 2>/dev/null | sed -n "s/^[[:space:]]*listen_addresses[[:space:]]*=[[:space:]]*'\\([^']*\\)'.*/conf-listen \\1/p" | tail -n 1; fi`,
      sh`if grep -q ${`BEGIN ${MANAGED_MARKER}`} "$d/pg_hba.conf"; then echo hba-block; sed -n ${`/BEGIN ${MANAGED_MARKER}/,/END convex-ops/p`} "$d/pg_hba.conf" | awk '$1 == "host" { print "hba " $4 }'; fi`,
      sh`runuser -u postgres -- psql -XAtq -F ' ' -c ${query} 2>/dev/null`,
      'true',
    ].join('\n'),
    parse: out => parsePostgres(out),
  };
}

export function parsePostgres(out: string): PostgresInfo {
  const info: PostgresInfo = { installed: false, online: false, hbaBlock: false, hbaSubnets: [] };
  let conf: string | undefined;
  for (const line of out.split('\n')) {
    const [kind, ...rest] = line.trim().split(' ');
    const value = rest.join(' ');
    if (kind === 'version') Object.assign(info, { installed: true, version: value });
    else if (kind === 'status') info.online = value === 'online';
    else if (kind === 'listen') info.listen = value;
    else if (kind === 'conf-listen') conf = value;
    else if (kind === 'hba-block') info.hbaBlock = true;
    else if (kind === 'hba' && value) info.hbaSubnets.push(value);
    else if (kind === 'db') info.database = value !== '0';
    else if (kind === 'role') info.role = value !== '0';
  }
  if (info.listen === undefined && conf !== undefined) info.listen = conf;
  return info;
}

export interface HttpProbe {
  /** HTTP status of GET /version on the API port ("000": nothing answered). */
  version: string;
  /** HTTP status of GET /api/check_admin_key with the .env's admin key; "none" without a key. */
  adminKey: string;
}

/** Where the droplet itself reaches the API port. */
const apiAddress = (host: Host) => (host.bind_address === '0.0.0.0' ? '127.0.0.1' : host.bind_address);

export function httpFact(host: Host): Fact<HttpProbe> {
  const base = `http://${apiAddress(host)}:3210`;
  return {
    key: `doctor:http:${base}`,
    waits: true,
    // The key goes to curl on its stdin (-H @-), never on a command line that `ps` would show.
    // GET /api/check_admin_key exists in the real backend (crates/local_backend/src/dashboard.rs,
    // the dashboard's login check): 200 for a valid key, 401/403 otherwise.
    command: [
      sh`key=$(sed -n 's/^CONVEX_ADMIN_KEY=//p' ${envPath(host)} 2>/dev/null | tail -n 1)`,
      sh`curl -s -o /dev/null -w 'version %{http_code}\n' --max-time 5 ${`${base}/version`}`,
      `if [ -z "$key" ]; then echo 'admin none'; else printf 'Authorization: Convex %s\\n' "$key" | curl -s -o /dev/null -w 'admin %{http_code}\\n' --max-time 5 -H @- ${sh`${`${base}/api/check_admin_key`}`}; fi`,
      'true',
    ].join('\n'),
    parse: out => ({
      version: /^version (\d+)/m.exec(out)?.[1] ?? '000',
      adminKey: /^admin (\w+)/m.exec(out)?.[1] ?? '000',
    }),
  };
}

export interface DnsInfo { names: Map<string, string[]>; self: string[] }

export function dnsFact(host: Host): Fact<DnsInfo> {
  const names = host.domains ? [host.domains.api, host.domains.site, host.domains.dashboard] : [];
  return {
    key: `doctor:dns:${names.join(',')}`,
    waits: true,
    command:
      (names.length ? sh`for d in ${names}; do printf 'dns %s' "$d"; for a in $(getent ahosts "$d" | awk '{print $1}' | sort -u); do printf ' %s' "$a"; done; echo; done; ` : '') +
      `printf 'self'; for a in $(hostname -I 2>/dev/null); do printf ' %s' "$a"; done; echo`,
    parse: out => {
      const info: DnsInfo = { names: new Map(), self: [] };
      for (const line of out.split('\n')) {
        const [kind, ...rest] = line.trim().split(/\s+/);
        if (kind === 'dns' && rest[0]) info.names.set(rest[0], rest.slice(1));
        if (kind === 'self') info.self = rest;
      }
      return info;
    },
  };
}

export interface CertInfo { path: string; notAfter?: number; now?: number; names: string[] }

/** The certificate letsencrypt.ts obtains: certbot's --cert-name convex-<instance>. */
export const certDir = (host: Host) => `/etc/letsencrypt/live/convex-${host.instance_name}`;

export function certFact(host: Host): Fact<CertInfo | undefined> {
  const dir = certDir(host);
  return {
    key: `doctor:cert:${dir}`,
    command: [
      sh`c=${`${dir}/cert.pem`}; [ -f "$c" ] || c=${`${dir}/fullchain.pem`}; [ -f "$c" ] || exit 0`,
      'echo "path $c"',
      `echo "end $(date -d "$(openssl x509 -in "$c" -noout -enddate | cut -d= -f2)" +%s)"`,
      'echo "now $(date +%s)"',
      `openssl x509 -in "$c" -noout -ext subjectAltName | tr ',' '\\n' | sed -n 's/^ *DNS:/name /p'`,
      'true',
    ].join('\n'),
    parse: out => {
      const lines = out.split('\n').map(l => l.trim());
      const value = (key: string) => lines.find(l => l.startsWith(`${key} `))?.slice(key.length + 1);
      const path = value('path');
      if (!path) return undefined;
      const number = (key: string) => (/^\d+$/.test(value(key) ?? '') ? Number(value(key)) : undefined);
      return { path, notAfter: number('end'), now: number('now'), names: lines.filter(l => l.startsWith('name ')).map(l => l.slice(5)) };
    },
  };
}

/** Who holds the run lock, if a run is in progress (a shared flock never blocks the run). */
export const runInProgress: Fact<string | undefined> = {
  key: 'doctor:lock',
  command: sh`[ -e ${`${STATE_DIR}/lock`} ] || exit 0; flock -n -s ${`${STATE_DIR}/lock`} true || echo "busy $(cat ${`${STATE_DIR}/lock.holder`} 2>/dev/null)"`,
  parse: out => (out.startsWith('busy') ? out.slice(5).trim() || 'another run' : undefined),
};

export interface DoctorState {
  docker: DockerState;
  networks: DockerNetworks;
  containers: Map<string, ContainerInfo>;
  log: LogLine[];
  listeners: Listener[];
  /** Ports published by running containers (other than Convex's own, for a conflict). */
  publications?: Publication[];
  disks: DiskUsage[];
  env: TextFile;
  compose: TextFile;
  postgres?: PostgresInfo;
  http: HttpProbe;
  dns: DnsInfo;
  cert?: CertInfo;
  lock?: string;
  /** The admin key in the operator's .secrets/<host>.env, if that file exists. */
  localAdminKey?: string;
}

export function doctorFacts(host: Host): Array<Fact<unknown>> {
  const facts: Array<Fact<unknown>> = [
    dockerState, dockerNetworks, containersInfo, backendLog, listeners, publications, diskFact(host),
    textFile('env', envPath(host)), textFile('compose', composePath(host)), httpFact(host), dnsFact(host), certFact(host), runInProgress,
  ];
  if (host.postgres.mode === 'local') facts.push(postgresFact(host));
  return facts;
}

/** Reads everything doctor needs from the host, in one remote command. */
export async function readDoctorState(conn: Connection, host: Host, localSecrets?: string): Promise<DoctorState> {
  const facts = new Readings();
  await gatherFacts(conn, doctorFacts(host), facts);
  const get = <T>(fact: Fact<T>) => facts.get(fact) as T;
  const env = get(textFile('env', envPath(host)));
  const compose = get(textFile('compose', composePath(host)));
  // Before anything is printed: every secret this host has is masked from here on.
  parseEnv(env.content);
  passwordFromCompose(host, compose.content);
  let localAdminKey: string | undefined;
  if (localSecrets && existsSync(localSecrets)) {
    localAdminKey = adminKeyInSettings(readFileSync(localSecrets, 'utf8'));
    registerSecret(localAdminKey);
  }
  return {
    docker: get(dockerState),
    networks: get(dockerNetworks),
    containers: get(containersInfo),
    log: get(backendLog),
    listeners: get(listeners),
    publications: get(publications),
    disks: get(diskFact(host)),
    env,
    compose,
    ...(host.postgres.mode === 'local' ? { postgres: get(postgresFact(host)) } : {}),
    http: get(httpFact(host)),
    dns: get(dnsFact(host)),
    ...(get(certFact(host)) ? { cert: get(certFact(host)) } : {}),
    ...(get(runInProgress) ? { lock: get(runInProgress) } : {}),
    ...(localAdminKey ? { localAdminKey } : {}),
  };
}

// ------------------------------------------------------------------------------------------
// The diagnosis: state in, findings out. No I/O.

/** What a backend log line says, when it is one of the failures operators meet. */
export interface LogCause { id: string; line: string; detail?: string }

const LOG_PATTERNS: Array<{ id: string; pattern: RegExp }> = [
  { id: 'postgres-url-db-name', pattern: /cluster url already contains db name:?\s*(\S*)/i },
  { id: 'postgres-url-user', pattern: /cluster url username must be set/i },
  { id: 'postgres-hba', pattern: /no pg_hba\.conf entry for host "?([0-9a-fA-F.:]+)"?/i },
  { id: 'postgres-tls', pattern: /invalid peer certificate|TLS handshake|certificate verify failed/i },
  { id: 'postgres-ssl-required', pattern: /server does not support SSL|SSL (?:connection )?is required|requires? SSL|SSL required/i },
  { id: 'postgres-db-missing', pattern: /database "?([A-Za-z0-9_-]+)"? does not exist/i },
  { id: 'postgres-password', pattern: /password authentication failed for user "?([\w-]+)"?/i },
  { id: 'postgres-resolve', pattern: /failed to lookup address|could not translate host name|Name or service not known|Temporary failure in name resolution/i },
  { id: 'postgres-refused', pattern: /connection refused/i },
  { id: 'port-in-use', pattern: /address already in use/i },
];

/** How a log cause is named where another finding refers to it. */
export const LOG_CAUSE_TITLES: Record<string, string> = {
  'postgres-url-db-name': 'a database name in POSTGRES_URL',
  'postgres-url-user': 'no user in POSTGRES_URL',
  'postgres-hba': 'pg_hba.conf refusing the backend',
  'postgres-tls': "PostgreSQL's certificate failing verification",
  'postgres-ssl-required': 'a TLS mismatch with PostgreSQL',
  'postgres-db-missing': 'a missing database',
  'postgres-password': 'a wrong database password',
  'postgres-resolve': 'an unresolvable database host',
  'postgres-refused': 'PostgreSQL refusing connections',
  'port-in-use': 'a port already in use',
};

/** The first line of each known failure, oldest first. */
export function classifyLog(lines: LogLine[]): LogCause[] {
  const found = new Map<string, LogCause>();
  for (const { text } of lines) {
    for (const { id, pattern } of LOG_PATTERNS) {
      const match = pattern.exec(text);
      if (!match) continue;
      if (!found.has(id)) found.set(id, { id, line: text.trim(), ...(match[1] ? { detail: match[1] } : {}) });
      break; // one cause per line: the most specific pattern comes first
    }
  }
  return [...found.values()];
}

/** The lines since the container last started (with a little slack for clock rounding). */
export function currentLog(lines: LogLine[], container: ContainerInfo | undefined): LogLine[] {
  const started = container ? Date.parse(container.startedAt) : NaN;
  if (Number.isNaN(started) || started <= 0) return lines;
  return lines.filter(l => l.time === undefined || l.time >= started - 2000);
}

const excerpt = (line: string) => {
  // Drop the line's own timestamp and level, keep the message, at most 200 characters.
  const message = line.replace(/^\S*\d{4}-\d\d-\d\dT\S+\s+/, '').replace(/^(ERROR|WARN|INFO)\s+/, '');
  return `"${message.length > 200 ? message.slice(0, 197) + '…' : message}"`;
};

function serviceEnv(compose: unknown, service: string): Map<string, string> {
  const env = (compose as { services?: Record<string, { environment?: unknown }> } | undefined)?.services?.[service]?.environment;
  const values = new Map<string, string>();
  if (Array.isArray(env)) {
    for (const entry of env) {
      const [key, ...rest] = String(entry).split('=');
      values.set(key!, rest.join('='));
    }
  } else if (env && typeof env === 'object') {
    for (const [key, value] of Object.entries(env)) values.set(key, String(value));
  }
  return values;
}

/** ${VAR} from .env, as compose interpolates it. */
const interpolate = (value: string | undefined, env: EnvValues) => value?.replace(/\$\{(\w+)\}/g, (_, name: string) => env.get(name) ?? '');

const truthy = (value: string | undefined) => /^(1|true|yes|on)$/i.test(value?.trim() ?? '');

/** IPv4 address in CIDR? (Enough for Docker's subnets; anything else counts as not covered.) */
export function inCidr(address: string, cidr: string): boolean {
  const toNumber = (ip: string) => ip.split('.').reduce((n, part) => (n << 8) + Number(part), 0) >>> 0;
  const [network, bits = '32'] = cidr.split('/');
  if (!/^\d+\.\d+\.\d+\.\d+$/.test(address) || !/^\d+\.\d+\.\d+\.\d+$/.test(network ?? '')) return false;
  const mask = Number(bits) === 0 ? 0 : (~0 << (32 - Number(bits))) >>> 0;
  return (toNumber(address) & mask) === (toNumber(network!) & mask);
}

const subnetCovered = (subnet: string, allowed: string[]) => allowed.some(a => a === subnet || (inCidr(subnet.split('/')[0]!, a) && Number(a.split('/')[1] ?? 32) <= Number(subnet.split('/')[1] ?? 32)));

const size = (bytes: number) => (bytes >= 1024 ** 3 ? `${(bytes / 1024 ** 3).toFixed(1)} GiB` : `${Math.round(bytes / 1024 ** 2)} MiB`);

/** Docker's own processes: a port held by one of these is the container's publication. */
const DOCKER_PROCESSES = /^(docker-proxy|dockerd|containerd|rootlesskit)/;

export function diagnose(host: Host, state: DoctorState): Finding[] {
  const findings = new Map<string, Finding>();
  const add = (id: string, severity: Severity, cause: string, fix: string) => {
    if (!findings.has(id)) findings.set(id, { id, severity, cause, fix });
  };
  const run = (script: string) => `npx zx scripts/${script}.ts --host ${host.name}`;
  const root = host.root;

  if (!state.docker.cli) {
    add('docker-missing', 'problem', 'Docker is not installed on the droplet, so nothing of Convex runs', `${run('install')} (installs Docker, PostgreSQL and the backend)`);
    return [...findings.values()];
  }
  if (!state.docker.running) {
    add('docker-down', 'problem', 'the Docker engine is not running, so neither the backend nor the dashboard can run', `start it (systemctl start docker, or service docker start), or ${run('docker')}; then ${run('up')}`);
  }
  if (state.lock) {
    add('run-in-progress', 'warning', `a run is in progress on this droplet (${state.lock}); what doctor sees may be a change half made`, 'wait for that run to finish, then run doctor again');
  }

  // -- configuration on the droplet: .env and docker-compose.yml
  const env = parseEnv(state.env.content);
  let compose: unknown;
  try {
    compose = state.compose.present ? YAML.parse(state.compose.content) : undefined;
  } catch {
    add('compose-invalid', 'problem', `${composePath(host)} is not valid YAML, so compose cannot start anything`, `${run('compose')} rewrites it from the inventory`);
  }
  const backendEnv = serviceEnv(compose, 'backend');
  if (!state.env.present) add('env-missing', 'problem', `${envPath(host)} does not exist: the backend has no INSTANCE_SECRET and no database credentials`, `${run('install')} (the secret step writes it)`);
  if (!state.compose.present) add('compose-missing', 'problem', `${composePath(host)} does not exist`, `${run('install')} (the compose step writes it)`);
  const url = interpolate(backendEnv.get('POSTGRES_URL'), env) ?? env.get('POSTGRES_URL');
  const instanceName = backendEnv.get('INSTANCE_NAME') ?? env.get('INSTANCE_NAME');
  let parsedUrl: URL | undefined;
  try {
    parsedUrl = url ? new URL(url) : undefined;
  } catch {
    add('postgres-url-invalid', 'problem', 'POSTGRES_URL is not a URL the backend can read', `${run('install')} rewrites POSTGRES_URL in ${envPath(host)}`);
  }

  // -- the backend's log, since it last started (or the whole tail while it is not healthy)
  const backend = state.containers.get(CONTAINERS.backend);
  const healthy = backend?.status === 'running' && (backend.health === undefined || backend.health === 'healthy');
  let causes = classifyLog(currentLog(state.log, backend));
  if (causes.length === 0 && !healthy) causes = classifyLog(state.log);
  const logged = new Map(causes.map(c => [c.id, c]));
  const says = (id: string) => (logged.has(id) ? `; the backend logs ${excerpt(logged.get(id)!.line)}` : '');

  const dbName = (instanceName ?? host.instance_name).replace(/-/g, '_');
  const urlPath = parsedUrl && parsedUrl.pathname && parsedUrl.pathname !== '/' ? parsedUrl.pathname : undefined;
  if (urlPath || logged.has('postgres-url-db-name')) {
    add(
      'postgres-url-db-name',
      'problem',
      `POSTGRES_URL contains a database name (${urlPath ?? logged.get('postgres-url-db-name')?.detail ?? 'a path'}), which Convex refuses: it picks the database (${dbName}) from INSTANCE_NAME${says('postgres-url-db-name')}`,
      `remove the database name from POSTGRES_URL (postgresql://user:password@host:5432?sslmode=disable); for this host ${run('install')} rewrites it in ${envPath(host)} and restarts the backend`,
    );
  }
  if (logged.has('postgres-url-user') || (parsedUrl && !parsedUrl.username)) {
    add('postgres-url-user', 'problem', `POSTGRES_URL has no user name${says('postgres-url-user')}`, `${run('install')} rewrites POSTGRES_URL with the role ${host.postgres.user}`);
  }

  const local = host.postgres.mode === 'local';
  const sslDisabled = parsedUrl?.searchParams.get('sslmode') === 'disable';
  const noRequire = truthy(backendEnv.get('DO_NOT_REQUIRE_SSL'));
  if (logged.has('postgres-tls') || (local && parsedUrl && compose && (!sslDisabled || !noRequire))) {
    const missing = [!sslDisabled ? 'POSTGRES_URL lacks ?sslmode=disable' : '', !noRequire ? 'the backend lacks DO_NOT_REQUIRE_SSL=true' : ''].filter(Boolean).join(' and ');
    add(
      'postgres-tls',
      'problem',
      local
        ? `the backend verifies PostgreSQL's TLS certificate, and the local server's is Debian's self-signed "snakeoil" one${missing ? ` (${missing})` : ''}${says('postgres-tls')}`
        : `the external PostgreSQL's certificate does not verify against the system's CAs${host.postgres.ca_file ? ` nor ${host.postgres.ca_file}` : ''}, or does not name ${parsedUrl?.hostname ?? 'the server'}${says('postgres-tls')}`,
      local
        ? `use both ?sslmode=disable in POSTGRES_URL and DO_NOT_REQUIRE_SSL=true (the bridge never leaves the droplet); ${run('install')} writes both`
        : `set hosts.${host.name}.postgres.ca_file to your provider's CA certificate (it becomes PG_CA_FILE), check the URL's host name matches the certificate, then ${run('install')}`,
    );
  }
  if (logged.has('postgres-ssl-required')) {
    add(
      'postgres-ssl-required',
      'problem',
      `the backend and PostgreSQL disagree about TLS: one requires it and the other does not offer it${says('postgres-ssl-required')}`,
      local
        ? `for the local server use ?sslmode=disable and DO_NOT_REQUIRE_SSL=true (${run('install')} writes both)`
        : 'enable TLS on the server (managed databases have it), or, only on a private network, set DO_NOT_REQUIRE_SSL=true and ?sslmode=disable',
    );
  }

  // -- the database the backend asks for: INSTANCE_NAME decides it
  const ownDb = databaseName(host);
  const hbaDb = /database "([^"]+)"/.exec(logged.get('postgres-hba')?.line ?? '')?.[1];
  const renamed = instanceName !== undefined && instanceName !== host.instance_name;
  if (renamed) {
    add(
      'instance-name',
      'problem',
      `${composePath(host)} sets INSTANCE_NAME=${instanceName} where the inventory says ${host.instance_name}, so the backend uses database ${dbName} instead of ${ownDb}` +
        `${local && hbaDb === dbName ? ' (which pg_hba.conf does not let it reach)' : ''} and refuses admin keys made for ${host.instance_name}${says('postgres-db-missing') || says('postgres-hba')}`,
      `${run('install')} puts INSTANCE_NAME=${host.instance_name} back; to move to ${instanceName} instead, set instance_name = "${instanceName}" in the inventory and run ${run('install')} (it creates ${dbName})`,
    );
  } else if (hbaDb && hbaDb !== ownDb) {
    add('postgres-wrong-database', 'problem', `the backend asks PostgreSQL for database ${hbaDb}, but this host's database is ${ownDb} (from instance_name ${host.instance_name})${says('postgres-hba')}`, `check INSTANCE_NAME in ${composePath(host)} and ${envPath(host)}; ${run('install')} puts INSTANCE_NAME=${host.instance_name} back`);
  }
  const recreate = (db: string) => `${run('postgres')} creates an empty ${db}; if its data is in a database of another name (renamed, restored elsewhere), rename that one back instead (ALTER DATABASE … RENAME TO ${db})`;

  // -- PostgreSQL on the droplet
  const pg = state.postgres;
  const gateway = state.networks.bridgeGateway;
  if (local && pg) {
    if (!pg.installed) {
      add('postgres-missing', 'problem', 'PostgreSQL is not installed on the droplet (postgres.mode = "local")', run('install'));
    } else if (!pg.online) {
      add(
        'postgres-down',
        'problem',
        `PostgreSQL ${pg.version}/main is not running, so the backend's connections are refused${says('postgres-refused')}`,
        `start it (systemctl start postgresql@${pg.version}-main, or pg_ctlcluster ${pg.version} main start) and read /var/log/postgresql/postgresql-${pg.version}-main.log if it stops again; ${run('install')} starts it too`,
      );
    }
    if (pg.installed && pg.listen !== undefined && gateway) {
      const addresses = pg.listen.split(',').map(a => a.trim());
      if (!addresses.includes('*') && !addresses.includes('0.0.0.0') && !addresses.includes(gateway)) {
        add(
          'postgres-listen',
          'problem',
          `PostgreSQL listens on '${pg.listen}' only, but the containers reach it at host.docker.internal = ${gateway} (the Docker bridge)${says('postgres-refused')}`,
          `listen_addresses must include ${gateway}: ${run('install')} writes conf.d/convex-ops.conf (listen_addresses = 'localhost,${gateway}') and restarts PostgreSQL`,
        );
      } else if (pg.online && addresses.includes(gateway) && !state.listeners.some(l => l.address === gateway && l.process === 'postgres')) {
        add(
          'postgres-not-on-bridge',
          'problem',
          `listen_addresses includes the Docker bridge ${gateway}, but PostgreSQL is not listening there: it started before Docker had created the bridge (at boot), so binding ${gateway} failed${says('postgres-refused')}`,
          `restart PostgreSQL now that the bridge exists: ${run('install')} does it, and on systemd it also orders PostgreSQL after Docker so that the next boot binds the bridge`,
        );
      }
    }
    if (pg.installed && !pg.hbaBlock) {
      add(
        'postgres-hba',
        'problem',
        `pg_hba.conf has no convex-ops block, so PostgreSQL rejects the backend's connections from the Docker networks (${state.networks.subnets.join(', ') || 'unknown'})${says('postgres-hba')}`,
        `${run('install')} puts the block back (host ${dbName} ${host.postgres.user} <docker subnet> scram-sha-256) and reloads PostgreSQL`,
      );
    } else if (pg.installed) {
      const uncovered = state.networks.subnets.filter(s => !subnetCovered(s, pg.hbaSubnets));
      // A refusal for another database is INSTANCE_NAME's doing, not the block's.
      if (uncovered.length || (logged.has('postgres-hba') && (!hbaDb || hbaDb === ownDb))) {
        add(
          'postgres-hba',
          'problem',
          `pg_hba.conf's convex-ops block does not allow ${uncovered.length ? uncovered.join(', ') : `the backend's address ${logged.get('postgres-hba')?.detail ?? ''}`.trim()}${says('postgres-hba')}`,
          `${run('install')} rewrites the block for the current Docker subnets and reloads PostgreSQL`,
        );
      }
    }
    if (pg.online && pg.database === false) {
      add('postgres-db-missing', 'problem', `database ${ownDb}, which Convex uses for INSTANCE_NAME ${host.instance_name}, does not exist${says('postgres-db-missing')}`, recreate(ownDb));
    }
  }
  if (local && parsedUrl && !['host.docker.internal', gateway].includes(parsedUrl.hostname)) {
    add(
      'postgres-host',
      'problem',
      `POSTGRES_URL points at ${parsedUrl.hostname}; inside the container that is ${/^(localhost|127\.|::1)/.test(parsedUrl.hostname) ? 'the container itself, not the droplet' : 'not the droplet'}${says('postgres-refused')}`,
      `use host.docker.internal (with extra_hosts host.docker.internal:host-gateway); ${run('install')} rewrites POSTGRES_URL`,
    );
  }
  const extraHosts = (compose as { services?: { backend?: { extra_hosts?: unknown } } } | undefined)?.services?.backend?.extra_hosts;
  const hasGatewayAlias = Array.isArray(extraHosts)
    ? extraHosts.some(e => /^host\.docker\.internal[:=]host-gateway$/.test(String(e).replace(/\s/g, '')))
    : typeof extraHosts === 'object' && extraHosts !== null && (extraHosts as Record<string, string>)['host.docker.internal'] === 'host-gateway';
  if (compose && parsedUrl?.hostname === 'host.docker.internal' && !hasGatewayAlias) {
    add('postgres-resolve', 'problem', `the backend service has no extra_hosts entry host.docker.internal:host-gateway, so host.docker.internal does not resolve in the container${says('postgres-resolve')}`, `${run('compose')} then ${run('up')} (the managed compose file has it)`);
  } else if (logged.has('postgres-resolve')) {
    add('postgres-resolve', 'problem', `the backend cannot resolve the database host ${parsedUrl?.hostname ?? ''}${says('postgres-resolve')}`, `check the host in POSTGRES_URL; for the local server use host.docker.internal with extra_hosts host.docker.internal:host-gateway (${run('install')})`);
  }
  if (logged.has('postgres-db-missing') && !findings.has('postgres-db-missing') && !renamed) {
    const named = logged.get('postgres-db-missing')!.detail ?? dbName;
    add(
      'postgres-db-missing',
      'problem',
      `database ${named} does not exist: Convex uses INSTANCE_NAME (${instanceName ?? host.instance_name}) with "-" as "_" as the database name${says('postgres-db-missing')}`,
      local ? recreate(named) : `create database ${named} on the external server (CREATE DATABASE ${named}), or ${run('postgres')} with a role allowed to`,
    );
  }
  if (logged.has('postgres-password')) {
    add('postgres-password', 'problem', `PostgreSQL refuses the password in POSTGRES_URL for role ${logged.get('postgres-password')!.detail ?? host.postgres.user}${says('postgres-password')}`, local ? `${run('postgres')} sets the role's password to POSTGRES_PASSWORD from ${envPath(host)}` : `put the right password in the variable named by hosts.${host.name}.postgres.password_env, then ${run('install')}`);
  }
  if (logged.has('postgres-refused') && ![...findings.keys()].some(id => ['postgres-down', 'postgres-listen', 'postgres-not-on-bridge', 'postgres-host', 'postgres-missing'].includes(id))) {
    add(
      'postgres-refused',
      'problem',
      `the backend's connection to PostgreSQL is refused${says('postgres-refused')}`,
      local
        ? `check that PostgreSQL runs and listens on the Docker bridge (listen_addresses = 'localhost,${gateway ?? '<bridge gateway>'}'), that pg_hba.conf allows the Docker subnets, and that POSTGRES_URL uses host.docker.internal; ${run('install')} sets all three`
        : `check that ${parsedUrl?.host ?? 'the server'} accepts connections from this droplet (the provider's trusted sources / firewall)`,
    );
  }

  // -- containers
  const portTaken = (port: number) => state.listeners.filter(l => l.port === port && l.process && !DOCKER_PROCESSES.test(l.process));
  const describe = (l: Listener) => `${l.process}${l.pid ? ` (pid ${l.pid})` : ''} on ${l.address}:${l.port}`;
  if (state.docker.running) {
    for (const [role, name] of Object.entries(CONTAINERS)) {
      const c = state.containers.get(name);
      if (!c) {
        add(`${role}-missing`, 'problem', `container ${name} does not exist`, run('install'));
        continue;
      }
      const portError = /port is already allocated|address already in use/i.exec(c.error);
      if (portError) {
        const port = Number(/:(\d+)(?:\D*)?(?:failed|: bind)/.exec(c.error)?.[1] ?? /:(\d{2,5})\b/.exec(c.error)?.[1]);
        const holders = Number.isFinite(port) ? portTaken(port) : [];
        const containers = (state.publications ?? []).filter(p => p.port === port && p.container !== name);
        const by = holders.length
          ? ` by ${holders.map(describe).join(', ')}`
          : containers.length ? ` by the container ${[...new Set(containers.map(p => p.container))].join(', ')}` : ' (by another container or program)';
        add(
          `port-${port || 'unknown'}`,
          'problem',
          `${name} cannot start: port ${port || '?'} is already in use${by}; Docker says "${c.error.replace(/\([0-9a-f]{12,}\)/g, '(…)').slice(0, 240)}"`,
          `stop or move that program (or the container holding the port), then ${run('up')}`,
        );
      }
      // Docker restarts a crashing container with a growing delay; between attempts it is
      // "restarting", during one it is "running" but not (yet) healthy.
      const looping = c.status === 'restarting' || (c.restarts >= 1 && !(c.status === 'running' && (c.health === 'healthy' || c.health === undefined)));
      if (looping) {
        const known = role === 'backend' ? causes.map(x => x.id) : [];
        const lastError = role === 'backend' ? [...currentLog(state.log, c)].reverse().find(l => /error|fatal|panic/i.test(l.text)) : undefined;
        add(
          `${role}-restart-loop`,
          'problem',
          `${name} is in a restart loop (${c.restarts} restarts, now ${c.status}${c.status === 'running' ? '' : `, last exit code ${c.exitCode}`})` +
            (known.length ? `, caused by ${known.map(id => LOG_CAUSE_TITLES[id] ?? id).join(' and ')} (see the other findings)` : lastError ? `; its last error: ${excerpt(lastError.text)}` : ''),
          known.length ? `fix those causes; the container then starts on its own (or ${run('up')})` : `read docker logs ${name} on the droplet; the causes doctor knows are listed in the README's troubleshooting`,
        );
      } else if ((c.status === 'exited' || c.status === 'dead') && !portError) {
        add(`${role}-stopped`, 'problem', `${name} is ${c.status} (exit code ${c.exitCode}, since ${c.finishedAt.slice(0, 19)}Z)`, `${run('up')} starts it`);
      } else if (c.status === 'created' && !portError) {
        add(`${role}-not-started`, 'problem', `${name} was created but never started${c.error ? `: ${c.error.slice(0, 200)}` : ''}`, run('up'));
      } else if (c.status === 'running' && c.health === 'unhealthy' && !looping) {
        add(`${role}-unhealthy`, 'problem', `${name} runs but its health check fails${c.healthOutput ? `: ${excerpt(c.healthOutput)}` : ''}`, `${run('check')} and docker logs ${name} show more; a new image may be broken: compare with the inventory's pinned image (${c.image})`);
      }
      const pinned = role === 'backend' ? host.backend_image : host.dashboard_image;
      if (c.image !== pinned) add(`${role}-image`, 'warning', `${name} runs ${c.image}, the inventory pins ${pinned}`, `${run('up')} (or all.ts --promote) puts the pinned image in place`);
    }
  }
  // A program on a Convex port while the container that should own it is down.
  const ports: Array<[number, string]> = [[3210, CONTAINERS.backend], [3211, CONTAINERS.backend], [6791, CONTAINERS.dashboard]];
  for (const [port, owner] of ports) {
    const holders = portTaken(port);
    if (holders.length && state.containers.get(owner)?.status !== 'running' && !findings.has(`port-${port}`)) {
      add(`port-${port}`, 'problem', `port ${port}, which ${owner} publishes, is taken by ${holders.map(describe).join(', ')}`, `stop or move that program, then ${run('up')}`);
    }
  }
  if (host.domains) {
    for (const port of [80, 443]) {
      const holders = state.listeners.filter(l => l.port === port && l.process && l.process !== 'nginx');
      if (holders.length) add(`port-${port}`, 'problem', `port ${port} is taken by ${holders.map(describe).join(', ')}, so nginx cannot serve ${host.domains.api}`, `stop or remove that web server, then ${run('nginx')}`);
    }
  }
  if (logged.has('port-in-use') && ![...findings.keys()].some(k => k.startsWith('port-'))) {
    add('port-in-use', 'problem', `the backend cannot listen${says('port-in-use')}`, `find the program on that port (ss -ltnp), stop it, then ${run('up')}`);
  }

  // -- API and admin key (only meaningful while the backend answers)
  if (healthy && state.http.version === '000') {
    add('backend-unreachable', 'problem', `nothing answers on ${apiAddress(host)}:3210 although ${CONTAINERS.backend} runs`, `check the ports in ${composePath(host)} (bind_address ${host.bind_address}); ${run('compose')} and ${run('up')}`);
  }
  if (['401', '403'].includes(state.http.adminKey)) {
    add(
      'admin-key',
      'problem',
      `the admin key in ${envPath(host)} is refused by the backend (HTTP ${state.http.adminKey}): it was made with another INSTANCE_SECRET or INSTANCE_NAME than the backend runs with`,
      `if INSTANCE_SECRET was changed by mistake, put the old value back in ${envPath(host)} and ${run('up')}; otherwise remove the CONVEX_ADMIN_KEY line from ${envPath(host)} and ${run('admin-key')} (it generates a key for the current secret and rewrites .secrets/${host.name}.env)`,
    );
  } else if (state.http.adminKey === 'none' && healthy && state.env.present) {
    add('admin-key-missing', 'warning', `there is no CONVEX_ADMIN_KEY in ${envPath(host)} yet`, `${run('admin-key')} generates it`);
  } else if (state.http.adminKey === '404' && healthy) {
    // Backends older than /api/check_admin_key cannot be asked; the dashboard treats 404 the same way.
    add('admin-key-unchecked', 'warning', 'this backend has no /api/check_admin_key, so whether the admin key still matches could not be checked', 'log in to the dashboard with the key to check it');
  }
  if (state.localAdminKey && env.get('CONVEX_ADMIN_KEY') && state.localAdminKey !== env.get('CONVEX_ADMIN_KEY')) {
    add('admin-key-local', 'problem', `.secrets/${host.name}.env on this machine holds another admin key than ${envPath(host)} on the droplet, so the Convex CLI is refused`, `${run('admin-key')} rewrites .secrets/${host.name}.env`);
  }

  // -- disk
  const seen = new Set<string>();
  for (const disk of state.disks) {
    // The same file system mounted in several places (the volume, /var/lib/docker) is one finding.
    const fs = `${disk.filesystem}:${disk.sizeBytes}`;
    if (seen.has(fs)) continue;
    seen.add(fs);
    const what = disk.path === host.volume ? `the data volume ${host.volume}` : disk.path === '/var/lib/docker' ? "Docker's storage (/var/lib/docker)" : 'the root file system';
    const worst = Math.max(disk.percent, disk.inodesPercent ?? 0);
    const inodes = (disk.inodesPercent ?? 0) > disk.percent;
    if (worst >= 80) {
      add(
        `disk-${disk.path}`,
        worst >= 90 ? 'problem' : 'warning',
        `${what} (${disk.mount}) is ${worst >= 98 ? 'full' : worst >= 90 ? 'nearly full' : 'filling up'}: ${worst}% of its ${inodes ? 'inodes' : 'space'} used, ${size(disk.availableBytes)} free; PostgreSQL, the backend and backups fail when it is full`,
        disk.path === host.volume
          ? `free space (old backups in ${root}/backups beyond backup.keep, files in ${root}/storage you no longer need) or grow the volume`
          : 'free space (docker image prune, journalctl --vacuum-size=200M, apt-get clean) or grow the disk',
      );
    }
  }

  // -- DNS and certificate
  if (host.domains) {
    const mine = new Set([...state.dns.self, host.address]);
    for (const name of [host.domains.api, host.domains.site, host.domains.dashboard]) {
      const addresses = state.dns.names.get(name) ?? [];
      const elsewhere = addresses.filter(a => !mine.has(a));
      if (addresses.length === 0) {
        add(`dns-${name}`, 'problem', `${name} does not resolve, so Let's Encrypt cannot validate it and browsers cannot reach the backend`, `create an A record for ${name} pointing at ${host.address}, wait for it to propagate, then ${run('letsencrypt')}`);
      } else if (elsewhere.length) {
        add(`dns-${name}`, 'problem', `${name} resolves to ${elsewhere.join(', ')}, not to this droplet (${host.address}), so certificates cannot be issued for it and clients reach another machine`, `point the A (and AAAA) record of ${name} at ${host.address} and remove other records, then ${run('letsencrypt')}`);
      }
    }
  }
  if (state.cert && state.cert.notAfter !== undefined && state.cert.now !== undefined) {
    const days = Math.floor((state.cert.notAfter - state.cert.now) / 86400);
    const until = new Date(state.cert.notAfter * 1000).toISOString().slice(0, 10);
    if (days < 21) {
      add(
        'cert-expiry',
        'problem',
        days < 0 ? `the certificate ${state.cert.path} expired on ${until}: browsers and the Convex client refuse the backend` : `the certificate ${state.cert.path} expires in ${days} days (${until}) and was not renewed (certbot renews at 30 days left), so renewal is failing`,
        `run certbot renew --cert-name convex-${host.instance_name} on the droplet to see why (often DNS or port 80), fix that, then ${run('letsencrypt')}`,
      );
    } else if (days < 30) {
      add('cert-expiry', 'warning', `the certificate ${state.cert.path} expires in ${days} days (${until}); certbot should renew it now`, `if it is still not renewed in a few days, run certbot renew --cert-name convex-${host.instance_name} on the droplet`);
    }
    const missing = host.domains ? [host.domains.api, host.domains.site, host.domains.dashboard].filter(n => !state.cert!.names.includes(n)) : [];
    if (missing.length && state.cert.names.length) add('cert-names', 'problem', `the certificate does not cover ${missing.join(', ')}`, `${run('letsencrypt')} expands it`);
  }
  return [...findings.values()];
}

/** One line that says what was looked at, for a host with nothing to report. */
export function healthySummary(host: Host, state: DoctorState): string {
  const backend = state.containers.get(CONTAINERS.backend);
  const parts = [
    `${CONTAINERS.backend} ${backend?.health ?? backend?.status ?? 'absent'}`,
    `${CONTAINERS.dashboard} ${state.containers.get(CONTAINERS.dashboard)?.status ?? 'absent'}`,
    state.postgres ? `PostgreSQL ${state.postgres.version ?? ''} ${state.postgres.online ? 'online' : 'offline'}`.replace('  ', ' ') : `external PostgreSQL`,
    `disk ${Math.max(...state.disks.map(d => d.percent), 0)}% at most`,
    state.http.adminKey === '200' ? 'admin key valid' : `admin key ${state.http.adminKey}`,
    ...(host.domains ? [`DNS points here`] : []),
    ...(state.cert?.notAfter && state.cert.now ? [`certificate valid ${Math.floor((state.cert.notAfter - state.cert.now) / 86400)} more days`] : []),
    `${state.log.length} log lines read`,
  ];
  return parts.join(', ');
}

export interface DoctorResult {
  host: string;
  healthy: boolean;
  findings: Finding[];
  summary?: string;
  /** Doctor could not look: the host was unreachable or refused. */
  error?: string;
  /** Remote commands it took (one: everything is read at once). */
  commands: number;
  seconds: number;
}

/** Connects, reads, diagnoses. Never throws: an unreachable host is a result too. */
export async function examine(host: Host, opts: { acceptNew: boolean; local: (...parts: string[]) => string }): Promise<DoctorResult> {
  const started = Date.now();
  let conn: Connection | undefined;
  try {
    conn = await Connection.open(host, { acceptNew: opts.acceptNew });
    const state = await readDoctorState(conn, host, localSecretsFile(opts.local, host.name));
    const findings = diagnose(host, state);
    const healthy = !findings.some(f => f.severity === 'problem');
    return { host: host.name, healthy, findings, ...(healthy ? { summary: healthySummary(host, state) } : {}), commands: conn.commands, seconds: (Date.now() - started) / 1000 };
  } catch (error) {
    return { host: host.name, healthy: false, findings: [], error: redact((error as Error).message), commands: conn?.commands ?? 0, seconds: (Date.now() - started) / 1000 };
  } finally {
    conn?.close();
  }
}

