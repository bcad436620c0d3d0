// <root>/.env: INSTANCE_SECRET (generated once, never rotated), the local PostgreSQL password,
// the POSTGRES_URL built from them, and later the admin key. Mode 0600, owned by root. Values an
// earlier install already has are kept — adopting the guide's manual install keeps its secret.
import { randomBytes } from 'node:crypto';
import type { Host } from '../inventory.ts';
import type { Fact, Step } from '../step.ts';
import { fileFact, MANAGED_MARKER } from '../files.ts';
import type { DesiredFile, FileState } from '../files.ts';
import type { Change } from '../plan.ts';
import { fileChanges, phase } from '../plan.ts';
import { registerSecret } from '../redact.ts';
import { sh } from '../shell.ts';
import { yaml } from '../yaml.ts';
import { CONTAINERS, containersFact } from './docker.ts';
import { envKeyOf, secretValues, SETTING_ENV_PREFIXES } from '../backend-settings.ts';
import { CREDENTIAL_ENV_PREFIX, localStorageFact, storageCredentials, storageSwitchRefusal } from '../storage.ts';
import type { ContainerState } from './docker.ts';

export const envPath = (host: Host) => `${host.root}/.env`;
/** Where the backend keeps the secret it generated itself when none was given. */
const credentialsSecret = (host: Host) => `${host.volume}/data/credentials/instance_secret`;

/** The keys convex-ops owns, in the order they are written; other keys are kept after them. */
const OWN_KEYS = ['COMPOSE_PROJECT_NAME', 'INSTANCE_SECRET', 'POSTGRES_PASSWORD', 'POSTGRES_URL', 'CONVEX_ADMIN_KEY'];
const SECRET_KEYS = ['INSTANCE_SECRET', 'POSTGRES_PASSWORD', 'POSTGRES_URL', 'CONVEX_ADMIN_KEY'];

export type EnvValues = Map<string, string>;

export function parseEnv(text: string): EnvValues {
  const values: EnvValues = new Map();
  for (const line of text.split('\n')) {
    const match = /^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$/.exec(line);
    if (!match) continue;
    let value = match[2]!;
    if (/^(['"]).*\1$/.test(value)) value = value.slice(1, -1);
    values.set(match[1]!, value);
  }
  for (const [key, value] of values) if (isSecretKey(key)) registerSecret(value);
  return values;
}

/** The keys whose values are masked: ours, the secret settings of [backend_env] and [dashboard_env], the [storage] credentials. */
const INVENTORY_SECRET_PREFIXES = [...SETTING_ENV_PREFIXES, CREDENTIAL_ENV_PREFIX];
const isSecretKey = (key: string) => SECRET_KEYS.includes(key) || INVENTORY_SECRET_PREFIXES.some(prefix => key.startsWith(prefix));

export function renderEnv(values: EnvValues): string {
  const keys = [...OWN_KEYS.filter(k => values.has(k)), ...[...values.keys()].filter(k => !OWN_KEYS.includes(k))];
  return `# ${MANAGED_MARKER}. Secrets: keep this file mode 0600 and out of backups you share.\n# INSTANCE_SECRET must never change: every admin key derives from it.\n${keys.map(k => `${k}=${values.get(k)}`).join('\n')}\n`;
}

/** The values of a .env as read on the host: none when it is absent. */
export function envOf(state: FileState): EnvValues {
  return state.kind === 'file' ? parseEnv(state.content) : new Map();
}


const adoptedSecret = (host: Host): Fact<string | undefined> => ({
  key: `credentials-secret:${host.volume}`,
  command: sh`cat ${credentialsSecret(host)}`,
  parse: out => {
    const secret = out.trim();
    registerSecret(secret);
    return /^[0-9a-f]{64}$/.test(secret) ? secret : undefined;
  },
});

/** A password of 40 characters from [A-Za-z0-9]: no character that a URL or shell would mangle. */
function randomPassword(): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
  const out: string[] = [];
  while (out.length < 40) {
    for (const byte of randomBytes(64)) if (byte < 248 && out.length < 40) out.push(alphabet[byte % 62]!);
  }
  return out.join('');
}

/** RFC 3986 unreserved characters only, so the password survives any URL parser and compose's .env. */
function encodeUserinfo(value: string): string {
  return encodeURIComponent(value).replace(/[!'()*]/g, c => '%' + c.charCodeAt(0).toString(16).toUpperCase());
}

/** POSTGRES_URL as Convex wants it: no database name (Convex picks it from INSTANCE_NAME). */
export function postgresUrl(host: Host, password: string): string {
  const user = encodeUserinfo(host.postgres.user);
  if (host.postgres.mode === 'local') {
    // Debian's PostgreSQL offers TLS with a snakeoil certificate that the backend's verifier
    // rejects; on the droplet's own bridge TLS buys nothing, so it is off (with DO_NOT_REQUIRE_SSL).
    return `postgresql://${user}:${encodeUserinfo(password)}@host.docker.internal:5432?sslmode=disable`;
  }
  const url = new URL(host.postgres.url!);
  return `${url.protocol}//${user}:${encodeUserinfo(password)}@${url.host}${url.search}`;
}

export const composePath = (host: Host) => `${host.root}/docker-compose.yml`;

/**
 * The guide's manual install keeps the database password inside its hand-written compose file.
 * Adopting that install means keeping that password: the role may be shared with another app.
 */
export function passwordFromCompose(host: Host, composeText: string | undefined): string | undefined {
  if (!composeText) return undefined;
  try {
    const doc = yaml().parse(composeText) as { services?: Record<string, { environment?: string[] | Record<string, string> }> };
    for (const service of Object.values(doc?.services ?? {})) {
      const env = service.environment;
      const entries = Array.isArray(env) ? env.map(e => e.split(/=(.*)/s).slice(0, 2)) : Object.entries(env ?? {});
      const url = entries.find(([k]) => k === 'POSTGRES_URL')?.[1];
      if (!url || url.includes('${')) continue;
      const parsed = new URL(url);
      if (decodeURIComponent(parsed.username) === host.postgres.user && parsed.password) {
        const password = decodeURIComponent(parsed.password);
        registerSecret(password);
        return password;
      }
    }
  } catch {
    // Not YAML we understand: nothing to adopt, and the compose step will replace it.
  }
  return undefined;
}

/** What an install that convex-ops did not make already has, and must keep. */
export interface Adopted {
  /** The INSTANCE_SECRET the backend generated itself. */
  secret?: string;
  /** The database password in the hand-written compose file. */
  password?: string;
  /** The compose project of the running containers (Compose v1 names it after the real path). */
  project?: string;
}

/** Where new secrets come from: random bytes, or fixed values in a test. */
export interface Generate {
  secret: () => string;
  password: () => string;
}

const RANDOM: Generate = { secret: () => randomBytes(32).toString('hex'), password: randomPassword };

export function wantedEnv(host: Host, current: EnvValues, adopted: Adopted = {}, generate: Generate = RANDOM): EnvValues {
  const values = new Map(current);
  values.set('COMPOSE_PROJECT_NAME', values.get('COMPOSE_PROJECT_NAME') ?? adopted.project ?? 'convex');
  if (!values.get('INSTANCE_SECRET')) values.set('INSTANCE_SECRET', adopted.secret ?? generate.secret());
  let password: string;
  if (host.postgres.mode === 'local') {
    password = values.get('POSTGRES_PASSWORD') || adopted.password || generate.password();
    values.set('POSTGRES_PASSWORD', password);
  } else {
    password = process.env[host.postgres.password_env!]!;
    values.delete('POSTGRES_PASSWORD');
  }
  values.set('POSTGRES_URL', postgresUrl(host, password));
  setSecretSettings(host, values);
  for (const [key, value] of values) if (isSecretKey(key)) registerSecret(value);
  return values;
}

/**
 * What .env holds for the inventory's secrets, by .env key: the secret settings of
 * [backend_env] and [dashboard_env] and the [storage] credentials, from the operator's
 * environment; or the problems (cli.ts reports them before connecting).
 */
export function secretEnvValues(host: Host, env: NodeJS.ProcessEnv = process.env): { values: Map<string, string>; problems: string[] } {
  const values = new Map<string, string>();
  const problems: string[] = [];
  for (const [service, settings] of [['backend', host.backend_env], ['dashboard', host.dashboard_env]] as const) {
    const secrets = secretValues(settings ?? {}, `hosts.${host.name}.${service}_env`, env);
    problems.push(...secrets.problems);
    for (const [name, value] of secrets.values) values.set(envKeyOf(service, name), value);
  }
  const credentials = storageCredentials(host.storage, `hosts.${host.name}.storage`, env);
  problems.push(...credentials.problems);
  for (const [key, value] of credentials.values) values.set(key, value);
  return { values, problems };
}

/** The inventory's secrets in .env; keys of ones no longer in the inventory go, so no stale secret stays on the droplet. */
function setSecretSettings(host: Host, values: EnvValues): void {
  const wanted = secretEnvValues(host);
  if (wanted.problems.length) throw new Error(wanted.problems.join('\n'));
  for (const key of values.keys()) {
    if (INVENTORY_SECRET_PREFIXES.some(prefix => key.startsWith(prefix)) && !wanted.values.has(key)) values.delete(key);
  }
  for (const [key, value] of wanted.values) values.set(key, value);
}

/** The .env holding `values`: mode 0600, and its diffs show keys with every value masked. */
export function envFile(host: Host, values: EnvValues): DesiredFile {
  return { path: envPath(host), content: renderEnv(values), mode: '600', secret: true, label: '.env' };
}

export interface SecretFacts {
  env: FileState;
  /** The secret the backend generated in its credentials folder, if it did. */
  credentials: string | undefined;
  compose: FileState;
  containers: Map<string, ContainerState>;
  /** Whether the volume's local storage holds files (a switch to S3 would strand them). */
  localFiles: boolean;
}

/**
 * The .env write, when anything differs. INSTANCE_SECRET is never replaced once there; when it
 * is not yet, the write's label says where the new one comes from.
 */
export function planSecret(facts: SecretFacts, host: Host, generate: Generate = RANDOM): Change[] {
  // The first step that writes what a storage switch changes (the S3 credentials): refused here,
  // before anything is written.
  const refusal = storageSwitchRefusal(host, facts.compose, facts.localFiles);
  if (refusal) throw new Error(refusal);
  const current = envOf(facts.env);
  const hasSecret = Boolean(current.get('INSTANCE_SECRET'));
  const adopted: Adopted = {
    secret: hasSecret ? undefined : facts.credentials,
    password: facts.compose.kind === 'file' && !current.get('POSTGRES_PASSWORD') ? passwordFromCompose(host, facts.compose.content) : undefined,
    // Keeping the project of the containers already running makes compose replace them,
    // rather than fail on their names or start a second project beside them.
    project: current.get('COMPOSE_PROJECT_NAME') ? undefined : facts.containers.get(CONTAINERS.backend)?.composeProject,
  };
  const changes = fileChanges(facts.env, envFile(host, wantedEnv(host, current, adopted, generate)));
  if (hasSecret) return changes;
  const origin = adopted.secret ? 'adopting the INSTANCE_SECRET the backend generated' : 'with a generated INSTANCE_SECRET';
  return changes.map(change => (change.stdin === undefined ? change : { ...change, label: `${change.label}, ${origin}` }));
}

export const secret: Step = {
  name: 'secret',
  phases: [
    phase({
      facts: (host: Host) => ({ env: fileFact(envPath(host)), credentials: adoptedSecret(host), compose: fileFact(composePath(host)), containers: containersFact, localFiles: localStorageFact(host) }),
      plan: (facts, host) => planSecret(facts, host),
      ok: () => 'INSTANCE_SECRET and database credentials in place (mode 0600)',
    }),
  ],
};
