// [backup]'s off-host keys: a restic repository, the variable holding its password, retention,
// and optionally an inventory host the tool prepares as the SFTP target. Checked before anything
// connects, every problem with its key's path and the fix.
import type { OffsiteConfig, SftpTarget } from '../inventory.ts';

/** restic's remote backends. A local path would sit on the droplet itself and be lost with it. */
const SCHEMES = ['sftp', 'rest', 's3', 'b2', 'azure', 'gs', 'swift', 'rclone'];
const VARIABLE = /^[A-Za-z_][A-Za-z0-9_]*$/;
const PLAIN_PATH = /^\/[A-Za-z0-9._/-]*$/;
const PLAIN_NAME = /^[A-Za-z0-9._-]+$/;
const USER = /^[a-z_][a-z0-9_-]{0,31}$/;

/**
 * Where the droplet logs in for an sftp: repository, in either of restic's spellings,
 * `sftp:user@host:/path` and `sftp://user@host[:port]//path`; else what is wrong with it.
 */
export function sftpTarget(repository: string): SftpTarget | string {
  const example = 'e.g. "sftp:backup@vault.example.com:/srv/convex"';
  const short = /^sftp:([^@/:]+)@([^@/:]+):(\/.*)$/.exec(repository);
  const long = /^sftp:\/\/([^@/:]+)@([^@/:]+)(?::(\d{1,5}))?\/(\/.*)$/.exec(repository);
  const [user, host, port, path] = short ? [short[1]!, short[2]!, '22', short[3]!] : long ? [long[1]!, long[2]!, long[3] ?? '22', long[4]!] : [];
  if (!user || !host || !path) return `"${repository}" is not an SFTP repository with a user, a host and an absolute path, ${example}.`;
  if (!USER.test(user)) return `"${user}" is not a plain user name for the SFTP target; use lowercase letters, digits, "_" and "-", ${example}.`;
  if (!PLAIN_NAME.test(host)) return `"${host}" is not a plain host name or address, ${example}.`;
  if (!PLAIN_PATH.test(path) || path.split('/').some(part => part === '.' || part === '..') || path === '/') {
    return `"${path}" must be an absolute path below / of letters, digits, ".", "_", "-" and "/", ${example}.`;
  }
  const number = Number(port);
  if (number < 1 || number > 65535) return `port ${port} is not a TCP port.`;
  return { user, host, port: number, path: path.replace(/(.)\/+$/, '$1') };
}

/** What [backup] says about off-host copies: nothing, a config, or the problems found. */
export function offsiteConfig(backup: Record<string, unknown>, at: (key: string) => string, problems: string[]): OffsiteConfig | undefined {
  const before = problems.length;
  const repository = backup.repository as string | undefined;
  if (repository === undefined) {
    for (const key of ['password_env', 'credentials_env', 'repository_host']) {
      if (backup[key] !== undefined) problems.push(`${at(`backup.${key}`)}: only means something with backup.repository; set repository (e.g. "sftp:backup@vault.example.com:/srv/convex") or remove ${key}.`);
    }
    return undefined;
  }
  const scheme = /^([a-z0-9]+):/.exec(repository)?.[1];
  if (!scheme || !SCHEMES.includes(scheme)) {
    problems.push(
      `${at('backup.repository')}: ${JSON.stringify(repository)} is not a remote restic repository. Use ${SCHEMES.map(s => `${s}:`).join(', ')}, ` +
        `e.g. "sftp:backup@vault.example.com:/srv/convex"; a local path would be on the droplet, lost with it.`,
    );
  } else if (/\s/.test(repository)) {
    problems.push(`${at('backup.repository')}: must not contain spaces.`);
  } else if (/^[a-z0-9]+:(?:[a-z]+:)?\/\/[^/@]*:[^/@]*@/.test(repository)) {
    problems.push(`${at('backup.repository')}: must not contain a password; restic reads credentials from the variables named by credentials_env.`);
  }
  const sftp = scheme === 'sftp' ? sftpTarget(repository) : undefined;
  if (typeof sftp === 'string') problems.push(`${at('backup.repository')}: ${sftp}`);
  const password = backup.password_env;
  if (typeof password !== 'string') problems.push(`${at('backup.password_env')}: required with a repository: the name of an environment variable on your machine that holds the repository password.`);
  const credentials = (backup.credentials_env as string[] | undefined) ?? [];
  for (const name of [password, ...credentials]) {
    if (typeof name === 'string' && !VARIABLE.test(name)) problems.push(`${at('backup')}: ${JSON.stringify(name)} is not an environment variable name (letters, digits and "_").`);
  }
  const keep = { keep_daily: backup.keep_daily as number, keep_weekly: backup.keep_weekly as number, keep_monthly: backup.keep_monthly as number };
  for (const [key, value] of Object.entries(keep)) {
    if (value < 0) problems.push(`${at(`backup.${key}`)}: must be 0 or more.`);
  }
  if (Object.values(keep).every(value => value <= 0)) problems.push(`${at('backup')}: keep_daily, keep_weekly and keep_monthly are all 0, so restic would keep no snapshot. Keep at least one.`);
  const repositoryHost = backup.repository_host as string | undefined;
  if (repositoryHost !== undefined && scheme !== 'sftp') problems.push(`${at('backup.repository_host')}: the tool prepares SFTP targets only; use an sftp: repository, or remove repository_host.`);
  if (problems.length > before) return undefined;
  return {
    repository,
    password_env: password as string,
    credentials_env: credentials,
    ...keep,
    ...(repositoryHost !== undefined ? { repository_host: repositoryHost } : {}),
    ...(sftp && typeof sftp !== 'string' ? { sftp } : {}),
  };
}

/** A repository_host must be another host of the inventory. */
export function repositoryHostProblem(name: string, offsite: OffsiteConfig | undefined, hosts: string[]): string | undefined {
  const target = offsite?.repository_host;
  if (target === undefined) return undefined;
  const at = `hosts.${name}.backup.repository_host`;
  if (target === name) return `${at}: a host cannot keep its off-host copies on itself. Name another host, or set [hosts.${name}.backup] without the keys [defaults] gives it.`;
  if (!hosts.includes(target)) return `${at}: "${target}" is not a host. Known hosts: ${hosts.join(', ')}.`;
  return undefined;
}
