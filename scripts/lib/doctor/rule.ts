// What every doctor rule shares: the finding it makes, the de-duplication by id, and the context
// read once from the state (the configuration as the backend sees it, what its log says, the
// findings earlier rules made: a specific cause makes a generic one redundant).
import YAML from 'yaml';
import type { Host } from '../inventory.ts';
import { databaseName } from '../inventory.ts';
import { CONTAINERS } from '../steps/docker.ts';
import { parseEnv } from '../steps/secret.ts';
import type { EnvValues } from '../steps/secret.ts';
import type { DoctorState } from './facts.ts';
import { classifyLog, currentLog, excerpt } from './log.ts';
import type { LogCause } from './log.ts';

export type Severity = 'problem' | 'warning';

export interface Finding {
  /** Stable name of the cause, e.g. "postgres-url-db-name"; one finding per id and host. */
  id: string;
  severity: Severity;
  cause: string;
  fix: string;
}

/** Findings in the order they were made; the first one of an id wins, here or in `earlier`. */
export class Findings {
  readonly #byId = new Map<string, Finding>();
  readonly #earlier: Findings | undefined;

  constructor(earlier?: Findings) {
    this.#earlier = earlier;
  }

  add(id: string, severity: Severity, cause: string, fix: string): void {
    this.keep({ id, severity, cause, fix });
  }

  keep(finding: Finding): void {
    if (!this.has(finding.id)) this.#byId.set(finding.id, finding);
  }

  has(id: string): boolean {
    return this.#byId.has(id) || (this.#earlier?.has(id) ?? false);
  }

  ids(): string[] {
    return [...(this.#earlier?.ids() ?? []), ...this.#byId.keys()];
  }

  list(): Finding[] {
    return [...this.#byId.values()];
  }
}

/** The command line that repairs it, for this host. */
export const run = (host: Host, script: string) => `npx zx scripts/${script}.ts --host ${host.name}`;

export interface Context {
  /** The .env's values (reading it registers its secrets with redact). */
  env: EnvValues;
  /** docker-compose.yml parsed; undefined when it is absent or not YAML. */
  compose: unknown;
  composeInvalid: boolean;
  /** The backend service's environment as compose.yml writes it (before interpolation). */
  backendEnv: Map<string, string>;
  parsedUrl: URL | undefined;
  urlInvalid: boolean;
  instanceName: string | undefined;
  /** The database the backend asks for: INSTANCE_NAME with "-" as "_". */
  dbName: string;
  /** The database the inventory's instance_name gives. */
  ownDb: string;
  /** The database PostgreSQL's pg_hba refusal names, if the log has one. */
  hbaDb: string | undefined;
  /** INSTANCE_NAME differs from the inventory's instance_name. */
  renamed: boolean;
  local: boolean;
  /** The backend container runs and is healthy (or has no health check). */
  healthy: boolean;
  causes: LogCause[];
  logged: Map<string, LogCause>;
  /** "; the backend logs …" when the log has this cause, else "". */
  says: (id: string) => string;
  /** What earlier rules found. */
  found: Findings;
}

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

function parseCompose(state: DoctorState): { compose: unknown; composeInvalid: boolean } {
  try {
    return { compose: state.compose.present ? YAML.parse(state.compose.content) : undefined, composeInvalid: false };
  } catch {
    return { compose: undefined, composeInvalid: true };
  }
}

function parseUrl(url: string | undefined): { parsedUrl: URL | undefined; urlInvalid: boolean } {
  try {
    return { parsedUrl: url ? new URL(url) : undefined, urlInvalid: false };
  } catch {
    return { parsedUrl: undefined, urlInvalid: true };
  }
}

/** The backend's log since it last started (or the whole tail while it is not healthy). */
function readLog(state: DoctorState): Pick<Context, 'healthy' | 'causes' | 'logged' | 'says'> {
  const backend = state.containers.get(CONTAINERS.backend);
  const healthy = backend?.status === 'running' && (backend.health === undefined || backend.health === 'healthy');
  let causes = classifyLog(currentLog(state.log, backend));
  if (causes.length === 0 && !healthy) causes = classifyLog(state.log);
  const logged = new Map(causes.map(c => [c.id, c]));
  const says = (id: string) => (logged.has(id) ? `; the backend logs ${excerpt(logged.get(id)!.line)}` : '');
  return { healthy, causes, logged, says };
}

export function readContext(host: Host, state: DoctorState, found: Findings): Context {
  const env = parseEnv(state.env.content);
  const { compose, composeInvalid } = parseCompose(state);
  const backendEnv = serviceEnv(compose, 'backend');
  const { parsedUrl, urlInvalid } = parseUrl(interpolate(backendEnv.get('POSTGRES_URL'), env) ?? env.get('POSTGRES_URL'));
  const instanceName = backendEnv.get('INSTANCE_NAME') ?? env.get('INSTANCE_NAME');
  const log = readLog(state);
  return {
    env, compose, composeInvalid, backendEnv, parsedUrl, urlInvalid, instanceName,
    dbName: (instanceName ?? host.instance_name).replace(/-/g, '_'),
    ownDb: databaseName(host),
    hbaDb: /database "([^"]+)"/.exec(log.logged.get('postgres-hba')?.line ?? '')?.[1],
    renamed: instanceName !== undefined && instanceName !== host.instance_name,
    local: host.postgres.mode === 'local',
    ...log,
    found,
  };
}

/** A failure area's check: the state and context in, what it finds out. */
export type Rule = (host: Host, state: DoctorState, context: Context) => Finding[];
