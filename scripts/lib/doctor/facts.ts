// What doctor reads on the droplet: each a fact (a POSIX sh snippet plus a parser); all go to the
// host at once, in one remote command, and come back as one DoctorState the rules look at.
import { existsSync, readFileSync } from 'node:fs';
import type { Host } from '../inventory.ts';
import { databaseName } from '../inventory.ts';
import type { Fact } from '../step.ts';
import { gatherFacts, Readings, STATE_DIR } from '../step.ts';
import type { Connection } from '../ssh.ts';
import { MANAGED_MARKER } from '../files.ts';
import { lines, script, sh } from '../shell.ts';
import { registerSecret } from '../redact.ts';
import { CONTAINERS, dockerNetworks, dockerState, engineView } from '../steps/docker.ts';
import type { DockerNetworks, DockerState } from '../steps/docker.ts';
import { composePath, envPath, parseEnv, passwordFromCompose } from '../steps/secret.ts';
import { adminKeyInSettings } from '../steps/admin-key.ts';
import type { DnsState } from '../facts/dns.ts';
import { dnsFact } from '../facts/dns.ts';
import type { CertificateState } from '../facts/certificate.ts';
import { certificateFact } from '../facts/certificate.ts';
import type { WindowRecord } from '../steps/window-record.ts';
import { windowRecordFact } from '../steps/window-record.ts';

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
  command: sh`ss -Hltnp`,
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
  command: sh`docker ps --format '{{.Names}}\t{{.Ports}}'`,
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
    command: script`for p in ${sh`${paths}`}; do [ -e "$p" ] || continue; printf 'space %s ' "$p"; df -P -B1 "$p" | tail -n 1; printf 'inodes %s ' "$p"; df -Pi "$p" | tail -n 1; done`,
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
    command: lines(
      sh`v=$(ls -1 /etc/postgresql 2>/dev/null | sort -V | tail -n 1)`,
      sh`[ -n "$v" ] || exit 0`,
      sh`echo "version $v"`,
      sh`d=/etc/postgresql/$v/main`,
      sh`pg_lsclusters -h 2>/dev/null | awk -v v="$v" '$1 == v && $2 == "main" { print "status " $4 }'`,
      script`${sh`if live=$(runuser -u postgres -- psql -XAtq -c 'show listen_addresses' 2>/dev/null); then echo "listen $live"; `}${
        sh`else cat "$d/postgresql.conf" "$d"/conf.d/*.conf 2>/dev/null | sed -n "s/^[[:space:]]*listen_addresses[[:space:]]*=[[:space:]]*'\\([^']*\\)'.*/conf-listen \\1/p" | tail -n 1; fi`}`,
      sh`if grep -q ${`BEGIN ${MANAGED_MARKER}`} "$d/pg_hba.conf"; then echo hba-block; sed -n ${`/BEGIN ${MANAGED_MARKER}/,/END convex-ops/p`} "$d/pg_hba.conf" | awk '$1 == "host" { print "hba " $4 }'; fi`,
      sh`runuser -u postgres -- psql -XAtq -F ' ' -c ${query} 2>/dev/null`,
      sh`true`,
    ),
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
export const apiAddress = (host: Host) => (host.bind_address === '0.0.0.0' ? '127.0.0.1' : host.bind_address);

export function httpFact(host: Host): Fact<HttpProbe> {
  const base = `http://${apiAddress(host)}:3210`;
  return {
    key: `doctor:http:${base}`,
    waits: true,
    // The key goes to curl on its stdin (-H @-), never on a command line that `ps` would show.
    // GET /api/check_admin_key exists in the real backend (crates/local_backend/src/dashboard.rs,
    // the dashboard's login check): 200 for a valid key, 401/403 otherwise.
    command: lines(
      sh`key=$(sed -n 's/^CONVEX_ADMIN_KEY=//p' ${envPath(host)} 2>/dev/null | tail -n 1)`,
      sh`curl -s -o /dev/null -w 'version %{http_code}\n' --max-time 5 ${`${base}/version`}`,
      sh`if [ -z "$key" ]; then echo 'admin none'; else printf 'Authorization: Convex %s\\n' "$key" | curl -s -o /dev/null -w 'admin %{http_code}\\n' --max-time 5 -H @- ${`${base}/api/check_admin_key`}; fi`,
      sh`true`,
    ),
    parse: out => ({
      version: /^version (\d+)/m.exec(out)?.[1] ?? '000',
      adminKey: /^admin (\w+)/m.exec(out)?.[1] ?? '000',
    }),
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
  dns: DnsState;
  /** Only when there is a certificate. */
  cert?: CertificateState;
  lock?: string;
  /** A promotion's window left open on the host (steps/window-record.ts). */
  window?: WindowRecord;
  /** The admin key in the operator's .secrets/<host>.env, if that file exists. */
  localAdminKey?: string;
}

export function doctorFacts(host: Host): Array<Fact<unknown>> {
  const facts: Array<Fact<unknown>> = [
    dockerState, dockerNetworks, containersInfo, backendLog, listeners, publications, diskFact(host),
    textFile('env', envPath(host)), textFile('compose', composePath(host)), httpFact(host), dnsFact(host), certificateFact(host), runInProgress, windowRecordFact(host),
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
    ...(get(certificateFact(host)).present ? { cert: get(certificateFact(host)) } : {}),
    ...(get(runInProgress) ? { lock: get(runInProgress) } : {}),
    ...(get(windowRecordFact(host)) ? { window: get(windowRecordFact(host)) } : {}),
    ...(localAdminKey ? { localAdminKey } : {}),
  };
}
