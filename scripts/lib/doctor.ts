// doctor: why is this deployment broken? One remote command reads the backend's logs, the
// containers' state and the host's state (ports, disk, PostgreSQL, DNS, certificate, admin key);
// pure rules, one per failure area (doctor/), turn that into findings, each naming a cause and its fix.
//
// Read-only by design: doctor takes no run lock (it must work while a run hangs or holds the
// lock, and it writes nothing), never restarts anything, and every line it prints is redacted
// (the .env it reads registers INSTANCE_SECRET, the database password and the admin key).
import type { Host } from './inventory.ts';
import { Connection } from './ssh.ts';
import { redact } from './redact.ts';
import { CONTAINERS } from './steps/docker.ts';
import { localSecretsFile } from './steps/admin-key.ts';
import { readDoctorState } from './doctor/facts.ts';
import type { DoctorState } from './doctor/facts.ts';
import { Findings, readContext } from './doctor/rule.ts';
import type { Finding, Rule } from './doctor/rule.ts';
import { engine } from './doctor/engine.ts';
import { configFiles, instanceName, postgresUrl } from './doctor/env.ts';
import { postgresAccess, postgresConnection, postgresServer } from './doctor/postgres.ts';
import { containers } from './doctor/containers.ts';
import { ports } from './doctor/ports.ts';
import { api } from './doctor/api.ts';
import { disk } from './doctor/disk.ts';
import { certificate, dns } from './doctor/https.ts';
import { s3Storage } from './doctor/storage.ts';

export { containersFrom, parseDisk, parseListeners, parseLog, parsePostgres, parsePublications } from './doctor/facts.ts';
export type { DoctorState } from './doctor/facts.ts';
export { classifyLog, currentLog } from './doctor/log.ts';
export type { Finding } from './doctor/rule.ts';

/** In this order: where one cause explains another, the rule that names it comes first. */
const RULES: Rule[] = [configFiles, postgresUrl, instanceName, postgresServer, postgresAccess, postgresConnection, containers, ports, api, disk, dns, certificate, s3Storage];

export function diagnose(host: Host, state: DoctorState): Finding[] {
  const found = new Findings();
  for (const finding of engine(host, state)) found.keep(finding);
  if (!state.docker.cli) return found.list();
  const context = readContext(host, state, found);
  for (const rule of RULES) for (const finding of rule(host, state, context)) found.keep(finding);
  return found.list();
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

