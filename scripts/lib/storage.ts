// [hosts.X.storage]: where the backend keeps files, modules, exports and search indexes — on the
// droplet ("local", the default) or in S3-compatible buckets. The backend keeps silently using
// local storage when only some of its S3 variables are set, so an S3 configuration is whole or
// refused, before anything connects. Credentials are read from the operator's environment and
// reach the droplet only in .env.
import { operatorSecret } from './operator-secret.ts';
import type { Host } from './inventory.ts';
import type { Fact } from './step.ts';
import type { FileState } from './files.ts';
import { sh } from './shell.ts';

/** The five buckets, by inventory key, and the backend variable each becomes. */
export const BUCKETS = {
  exports_bucket: 'S3_STORAGE_EXPORTS_BUCKET',
  snapshot_imports_bucket: 'S3_STORAGE_SNAPSHOT_IMPORTS_BUCKET',
  modules_bucket: 'S3_STORAGE_MODULES_BUCKET',
  files_bucket: 'S3_STORAGE_FILES_BUCKET',
  search_bucket: 'S3_STORAGE_SEARCH_BUCKET',
} as const;
export type BucketKey = keyof typeof BUCKETS;

export interface S3Storage {
  mode: 's3';
  /** S3_ENDPOINT_URL; none: AWS itself. */
  endpoint?: string;
  region: string;
  force_path_style: boolean;
  buckets: Record<BucketKey, string>;
  /** The operator-side variables holding the access key id and the secret key. */
  access_key_env: string;
  secret_key_env: string;
}
export type StorageConfig = { mode: 'local' } | S3Storage;

/** The keys of [storage] beyond mode, all of which make sense only with mode = "s3". */
const S3_KEYS = ['endpoint', 'region', 'force_path_style', ...Object.keys(BUCKETS), 'access_key_env', 'secret_key_env'];
/** The ones mode = "s3" cannot go without. */
const REQUIRED = ['region', ...Object.keys(BUCKETS), 'access_key_env', 'secret_key_env'];

/** The names the backend reads that [storage] decides (backend-settings.ts refuses them in [backend_env]). */
export const STORAGE_VARIABLES = ['AWS_REGION', 'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'S3_ENDPOINT_URL', 'AWS_S3_FORCE_PATH_STYLE', ...Object.values(BUCKETS)];

/** The .env keys that hold the credentials, referred to from the compose file. */
export const CREDENTIAL_ENV_KEYS = { access: 'STORAGE_AWS_ACCESS_KEY_ID', secret: 'STORAGE_AWS_SECRET_ACCESS_KEY' } as const;
export const CREDENTIAL_ENV_PREFIX = 'STORAGE_AWS_';

const BUCKET_NAME = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;
const VARIABLE = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** The merged [storage] table as a StorageConfig, or the problems with it. */
export function checkStorage(table: Record<string, unknown>, at: string, problems: string[]): StorageConfig | undefined {
  const mode = table.mode ?? 'local';
  if (mode !== 'local' && mode !== 's3') {
    problems.push(`${at}.mode: ${JSON.stringify(mode)} is not a mode. Use "local" (files on the droplet's volume) or "s3".`);
    return undefined;
  }
  const given = S3_KEYS.filter(key => table[key] !== undefined);
  if (mode === 'local') {
    if (given.length) problems.push(`${at}: ${given.join(', ')} take effect only with mode = "s3". Set mode = "s3" with all of them, or remove them.`);
    return { mode: 'local' };
  }
  const missing = REQUIRED.filter(key => table[key] === undefined);
  if (missing.length) {
    problems.push(`${at}: mode = "s3" needs ${missing.join(', ')} as well (missing). With only some of its S3 variables the backend silently keeps files on the droplet.`);
    return undefined;
  }
  const before = problems.length;
  for (const key of Object.keys(BUCKETS)) {
    if (!BUCKET_NAME.test(String(table[key]))) problems.push(`${at}.${key}: ${JSON.stringify(table[key])} is not a bucket name: 3 to 63 lowercase letters, digits, "." and "-".`);
  }
  for (const key of ['access_key_env', 'secret_key_env']) {
    if (!VARIABLE.test(String(table[key]))) problems.push(`${at}.${key}: must name an environment variable on your machine, e.g. "CONVEX_S3_${key === 'access_key_env' ? 'ACCESS_KEY' : 'SECRET_KEY'}".`);
  }
  if (table.endpoint !== undefined && !isEndpoint(String(table.endpoint))) problems.push(`${at}.endpoint: ${JSON.stringify(table.endpoint)} must be an http:// or https:// URL with no path, user or password, e.g. "https://s3.eu-central-1.example.com".`);
  if (!/^[a-z0-9-]{1,40}$/.test(String(table.region))) problems.push(`${at}.region: ${JSON.stringify(table.region)} is not a region name, e.g. "us-east-1" (or "auto").`);
  if (problems.length > before) return undefined;
  return {
    mode: 's3',
    endpoint: table.endpoint as string | undefined,
    region: table.region as string,
    force_path_style: table.force_path_style === true,
    buckets: Object.fromEntries(Object.keys(BUCKETS).map(key => [key, table[key]])) as Record<BucketKey, string>,
    access_key_env: table.access_key_env as string,
    secret_key_env: table.secret_key_env as string,
  };
}

function isEndpoint(text: string): boolean {
  try {
    const url = new URL(text);
    return /^https?:$/.test(url.protocol) && url.hostname !== '' && !url.username && !url.password && (url.pathname === '/' || url.pathname === '') && !url.search && !/[\s"'$#\\]/.test(text);
  } catch {
    return false;
  }
}

/** The backend's S3 variables; the credentials only as ${…} references to .env. */
export function storageEnvironment(storage: StorageConfig | undefined): Record<string, string> {
  if (!storage || storage.mode !== 's3') return {};
  const env: Record<string, string> = { AWS_REGION: storage.region };
  for (const [key, variable] of Object.entries(BUCKETS)) env[variable] = storage.buckets[key as BucketKey];
  if (storage.endpoint) env.S3_ENDPOINT_URL = storage.endpoint.replace(/\/$/, '');
  if (storage.force_path_style) env.AWS_S3_FORCE_PATH_STYLE = 'true';
  env.AWS_ACCESS_KEY_ID = `\${${CREDENTIAL_ENV_KEYS.access}}`;
  env.AWS_SECRET_ACCESS_KEY = `\${${CREDENTIAL_ENV_KEYS.secret}}`;
  return env;
}

/** The credentials from the operator's environment, by .env key, or the problems (values never shown). */
export function storageCredentials(storage: StorageConfig | undefined, at: string, env: NodeJS.ProcessEnv = process.env): { values: Map<string, string>; problems: string[] } {
  const values = new Map<string, string>();
  const problems: string[] = [];
  if (!storage || storage.mode !== 's3') return { values, problems };
  for (const [which, key] of [['access_key_env', CREDENTIAL_ENV_KEYS.access], ['secret_key_env', CREDENTIAL_ENV_KEYS.secret]] as const) {
    const secret = operatorSecret(storage[which], `${at}.${which}`, env);
    if ('problem' in secret) problems.push(secret.problem);
    else values.set(key, secret.value);
  }
  return { values, problems };
}

/** Whether the volume's local storage holds any file (modules, user files, search indexes). */
export const localStorageFact = (host: Host): Fact<boolean> => ({
  key: `local-storage-used:${host.volume}`,
  command: sh`find ${`${host.volume}/data/storage`} -type f -print -quit 2>/dev/null`,
  parse: out => out.trim() !== '',
});

/** The storage the backend runs with now, as its compose file says; none before the first install. */
export function deployedStorage(compose: FileState): { mode: 'local' | 's3'; instance?: string } | undefined {
  if (compose.kind !== 'file') return undefined;
  const instance = /^\s+INSTANCE_NAME:\s*"?([^"\s]+)"?\s*$/m.exec(compose.content)?.[1];
  return { mode: /^\s+S3_STORAGE_FILES_BUCKET:/m.test(compose.content) ? 's3' : 'local', instance };
}

/**
 * Why the run must not switch this instance's storage, with Convex's procedure, or undefined.
 * Local → S3 with files on the volume would strand them there; S3 → local would leave the files
 * in the buckets, which the tool cannot list once the inventory no longer names them, so that
 * switch is made on a new instance (a new instance_name: a new, empty database).
 */
export function storageSwitchRefusal(host: Host, compose: FileState, localFilesUsed: boolean): string | undefined {
  const deployed = deployedStorage(compose);
  const wanted = host.storage?.mode ?? 'local';
  if (!deployed || deployed.mode === wanted) return undefined;
  const volume = `${host.volume}/data/storage`;
  const at = `hosts.${host.name}.storage`;
  const exported = `  1. npx convex export --include-file-storage --path backup.zip   (with .secrets/${host.name}.env loaded)`;
  const imported = `  4. npx convex deploy, then npx convex import --replace-all backup.zip`;
  if (wanted === 's3' && localFilesUsed) {
    return [
      `${at}: this instance keeps its files in local storage (${volume} is not empty), and switching it to S3 would leave them behind: the backend would no longer find them.`,
      "Move them with Convex's own export and import, then switch:",
      exported,
      `  2. on the droplet, move the old local storage aside: mv ${volume} ${volume}.before-s3`,
      '  3. run this script again: the instance starts on S3, with no files yet',
      imported,
      'Nothing was changed. To stay on local storage, remove [storage] (or set mode = "local").',
    ].join('\n');
  }
  if (wanted === 'local' && deployed.instance === host.instance_name) {
    return [
      `${at}: this instance keeps its files in S3, and switching it to local storage would leave them in the buckets: the backend would no longer find them.`,
      "Move them with Convex's own export and import, into a new instance:",
      exported,
      `  2. set hosts.${host.name}.instance_name to a new name (a new, empty database) with local storage`,
      '  3. run this script again',
      imported,
      `Nothing was changed. To stay on S3, keep ${at} with mode = "s3".`,
    ].join('\n');
  }
  return undefined;
}
