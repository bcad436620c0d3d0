// [hosts.X.backend_env] and [hosts.X.dashboard_env]: environment variables of the containers,
// checked against the names the real images are known to read (../shared/reference/
// convex-self-hosting-facts.md), before anything connects. A plain value goes into the compose
// file; a secret one ({ env = "NAME" }, read from the operator's environment) goes into the
// droplet's .env under a key of ours, and the compose file only refers to it.
import { closest, distance } from 'fastest-levenshtein';
import { operatorSecret } from './operator-secret.ts';
import { STORAGE_VARIABLES } from './storage.ts';

export type Service = 'backend' | 'dashboard';

/** One setting as the inventory gives it: a value, or the operator-side variable holding a secret. */
export type SettingValue = { value: string } | { env: string };
export type Settings = Record<string, SettingValue>;

/** What a known name's value must look like (checked for plain values; a secret's is not shown). */
type Kind = 'integer' | 'boolean' | 'text' | 'log-format' | 'admin-key';

const BACKEND_KNOWN: Record<string, Kind> = {
  APPLICATION_MAX_CONCURRENT_QUERIES: 'integer',
  APPLICATION_MAX_CONCURRENT_MUTATIONS: 'integer',
  APPLICATION_MAX_CONCURRENT_V8_ACTIONS: 'integer',
  APPLICATION_MAX_CONCURRENT_NODE_ACTIONS: 'integer',
  V8_ACTION_USER_TIMEOUT_SECS: 'integer',
  NODE_ACTION_USER_TIMEOUT_SECS: 'integer',
  DOCUMENT_RETENTION_DELAY: 'integer',
  INDEX_RETENTION_DELAY: 'integer',
  HTTP_SERVER_TIMEOUT_SECONDS: 'integer',
  MAX_BACKEND_PUBLIC_API_REQUEST_SIZE: 'integer',
  RUST_LOG: 'text',
  LOG_FORMAT: 'log-format',
  REDACT_LOGS_TO_CLIENT: 'boolean',
  DISABLE_BEACON: 'boolean',
  DISABLE_METRICS_ENDPOINT: 'boolean',
  AWS_S3_DISABLE_SSE: 'boolean',
  AWS_S3_DISABLE_CHECKSUMS: 'boolean',
};

const DASHBOARD_KNOWN: Record<string, Kind> = {
  // Pre-fills the admin key: whoever reaches the dashboard is then an admin.
  NEXT_PUBLIC_ADMIN_KEY: 'admin-key',
};

const KNOWN: Record<Service, Record<string, Kind>> = { backend: BACKEND_KNOWN, dashboard: DASHBOARD_KNOWN };

/** Names the images no longer read, and what replaced them. */
const RENAMED: Record<string, string[]> = {
  ACTIONS_USER_TIMEOUT_SECS: ['V8_ACTION_USER_TIMEOUT_SECS', 'NODE_ACTION_USER_TIMEOUT_SECS'],
};

/** Names convex-ops sets itself, and the inventory key (or mechanism) that decides them. */
const OWNED: Record<string, string> = {
  INSTANCE_NAME: 'instance_name',
  INSTANCE_SECRET: 'nothing: secret.ts generates it once in .env and never rotates it (every admin key derives from it)',
  POSTGRES_URL: '[postgres] url, user and password_env (or mode = "local")',
  MYSQL_URL: '[postgres] (convex-ops runs the backend on PostgreSQL)',
  DATABASE_URL: '[postgres] (convex-ops runs the backend on PostgreSQL)',
  CONVEX_CLOUD_ORIGIN: '[domains] api (or bind_address without domains)',
  CONVEX_SITE_ORIGIN: '[domains] site (or bind_address without domains)',
  NEXT_PUBLIC_DEPLOYMENT_URL: '[domains] api (or bind_address without domains)',
  PG_CA_FILE: '[postgres] ca_file',
  DO_NOT_REQUIRE_SSL: '[postgres] mode (local turns it on, external keeps TLS verified)',
  ...Object.fromEntries(STORAGE_VARIABLES.map(name => [name, '[storage] (mode = "s3" with its region, endpoint, buckets and credentials)'])),
};

/** The .env key holding a secret setting: our own prefix, so it never meets a key of .env's own. */
export function envKeyOf(service: Service, name: string): string {
  return `${service.toUpperCase()}_ENV_${name}`;
}

/** The prefixes of those keys: a key with one that no setting wants any more is removed. */
export const SETTING_ENV_PREFIXES = (['backend', 'dashboard'] as const).map(service => envKeyOf(service, ''));

/** The compose file's value of a setting: a secret by ${…} reference, "$" doubled so compose keeps it. */
export function composeValue(service: Service, name: string, setting: SettingValue): string {
  return 'env' in setting ? `\${${envKeyOf(service, name)}}` : setting.value.replace(/\$/g, '$$$$');
}

const VARIABLE = /^[A-Za-z_][A-Za-z0-9_]*$/;

export interface SettingsFindings { settings: Settings; problems: string[]; warnings: string[] }

/**
 * The table's settings, or the problems with it: each name known to the image (or let through
 * by --allow-unknown-env), not renamed, not owned by convex-ops; each value a string, a number
 * or { env = "NAME" }.
 */
export function checkSettings(table: Record<string, unknown>, service: Service, at: string, allowUnknown: boolean): SettingsFindings {
  const found: SettingsFindings = { settings: {}, problems: [], warnings: [] };
  for (const [name, raw] of Object.entries(table)) {
    const where = `${at}.${name}`;
    const problem = nameProblem(name, service, allowUnknown);
    if (problem) {
      found.problems.push(`${where}: ${problem}`);
      continue;
    }
    const setting = settingOf(raw, where, found.problems);
    if (!setting) continue;
    const kind = KNOWN[service][name];
    if (kind) valueProblems(setting, kind, where, found);
    found.settings[name] = setting;
  }
  return found;
}

function nameProblem(name: string, service: Service, allowUnknown: boolean): string | undefined {
  if (!VARIABLE.test(name)) return `${JSON.stringify(name)} is not an environment variable name. Use letters, digits and "_", not starting with a digit.`;
  if (OWNED[name]) return `${name} is set by convex-ops itself and cannot be overridden here. Use ${OWNED[name]} instead.`;
  const replacements = RENAMED[name];
  if (replacements) return `${name} no longer exists: it was replaced by ${replacements.join(' and ')}. Set ${replacements.length > 1 ? 'those' : 'that'} instead.`;
  if (KNOWN[service][name] || allowUnknown) return undefined;
  const other: Service = service === 'backend' ? 'dashboard' : 'backend';
  if (KNOWN[other][name]) return `${name} is read by the ${other}, not the ${service}. Move it to [${other}_env].`;
  const known = Object.keys(KNOWN[service]);
  const suggestion = closest(name, known);
  const hint = distance(name, suggestion) <= Math.max(3, Math.floor(name.length / 4)) ? ` Did you mean ${suggestion}?` : ` Known names: ${known.join(', ')}.`;
  return `${name} is not a variable the ${service} image is known to read.${hint} To set it anyway, pass --allow-unknown-env.`;
}

function settingOf(raw: unknown, where: string, problems: string[]): SettingValue | undefined {
  if (typeof raw === 'string') return { value: raw };
  if (typeof raw === 'number' && Number.isFinite(raw)) return { value: String(raw) };
  if (typeof raw === 'object' && raw !== null && !Array.isArray(raw)) {
    const keys = Object.keys(raw);
    const env = (raw as Record<string, unknown>).env;
    if (keys.length === 1 && typeof env === 'string' && VARIABLE.test(env)) return { env };
  }
  const hint = typeof raw === 'boolean' ? ` Write it as a string, e.g. "${raw}".` : '';
  problems.push(`${where}: must be a string, a number, or a secret given as { env = "NAME" } (the variable on your machine that holds it).${hint}`);
  return undefined;
}

function valueProblems(setting: SettingValue, kind: Kind, where: string, found: SettingsFindings): void {
  if (kind === 'admin-key') found.warnings.push(`${where}: pre-fills the admin key, so whoever reaches the dashboard is an admin of the instance. Keep dashboard_allow to the networks that need it.`);
  if ('env' in setting) return;
  const value = setting.value;
  if (kind === 'admin-key') found.problems.push(`${where}: is a secret; give it as { env = "NAME" }, the variable on your machine that holds it, so it never lands in the compose file.`);
  else if (kind === 'integer' && !/^\d+$/.test(value)) found.problems.push(`${where}: ${JSON.stringify(value)} must be a whole number, e.g. 32.`);
  else if (kind === 'boolean' && value !== 'true' && value !== 'false') found.problems.push(`${where}: ${JSON.stringify(value)} must be "true" or "false".`);
  else if (kind === 'log-format' && !['json', 'compact', 'pretty'].includes(value)) found.problems.push(`${where}: ${JSON.stringify(value)} must be "json", "compact" or "pretty".`);
}

/** The value of each secret setting, from the operator's environment, or the problems. */
export function secretValues(settings: Settings, at: string, env: NodeJS.ProcessEnv = process.env): { values: Map<string, string>; problems: string[] } {
  const values = new Map<string, string>();
  const problems: string[] = [];
  for (const [name, setting] of Object.entries(settings)) {
    if (!('env' in setting)) continue;
    const secret = operatorSecret(setting.env, `${at}.${name}`, env);
    if ('problem' in secret) problems.push(secret.problem);
    else values.set(name, secret.value);
  }
  return { values, problems };
}
