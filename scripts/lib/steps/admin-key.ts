// The admin key: generated once by the backend's own generate_admin_key.sh, kept in the host's
// .env, and written to the operator's .secrets/<host>.env (mode 0600, git-ignored) so the Convex
// CLI works. It is printed only with --show.
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Host } from '../inventory.ts';
import { NAME } from '../inventory.ts';
import type { Step } from '../step.ts';
import { memoKey } from '../step.ts';
import { atomicWriteScript, fileFact, MANAGED_MARKER, maskedEnvDiff, sha256, tempPrefix } from '../files.ts';
import type { FileState } from '../files.ts';
import type { Change } from '../plan.ts';
import { phase } from '../plan.ts';
import { registerSecret } from '../redact.ts';
import { lines, script, sh } from '../shell.ts';
import type { Script } from '../shell.ts';
import { origins } from './compose.ts';
import { CONTAINERS } from './docker.ts';
import { envFile, envOf, envPath } from './secret.ts';
import type { EnvValues } from './secret.ts';

/** What generate_admin_key.sh prints: the instance name, "|", hex. Nothing else is ever trusted:
 * the key is read back from the droplet and ends up in a file the operator's shell sources. */
export const ADMIN_KEY = /^[a-z0-9-]+\|[0-9a-f]+$/;

export function localSecretsFile(local: (...parts: string[]) => string, host: string): string {
  // The inventory allows only such names; this keeps the path inside .secrets/ whatever calls it.
  if (!NAME.test(host)) throw new Error(`${JSON.stringify(host)} is not a plain host name, so it cannot name a file in .secrets/.`);
  return local('.secrets', `${host}.env`);
}

/**
 * One KEY='value' line that a POSIX shell (`set -a; . file`) and dotenv (the Convex CLI reads
 * .env.local with it) both read back exactly: inside single quotes neither knows any escape.
 * A value that holds a single quote or a line break has no such form, so it is refused.
 */
function quotedSetting(key: string, value: string): string {
  if (/['\r\n]/.test(value)) throw new Error(`${key}: the value holds a single quote or a line break, which cannot be written so that both a shell and dotenv read it back.`);
  return `${key}='${value}'\n`;
}

/** The content of .secrets/<host>.env: what the Convex CLI needs to reach this host. */
export function cliSettings(host: Host, key: string): string {
  return (
    `# Convex CLI settings for ${host.name}: source this file (set -a; . it) or copy it to .env.local\n` +
    quotedSetting('CONVEX_SELF_HOSTED_URL', origins(host).cloud) +
    quotedSetting('CONVEX_SELF_HOSTED_ADMIN_KEY', key)
  );
}

/** The admin key in a .secrets/<host>.env file (either the quoted form or an older plain one). */
export function adminKeyInSettings(text: string): string | undefined {
  const value = /^CONVEX_SELF_HOSTED_ADMIN_KEY=(.*)$/m.exec(text)?.[1]?.trim();
  return value?.replace(/^'(.*)'$/, '$1');
}

/** Writes a local file atomically with mode 0600. */
function writeLocalSecret(path: string, content: string): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, content, { mode: 0o600 });
  renameSync(tmp, path);
}

/** The operator's .secrets/<host>.env as it is now (no content: absent). */
export interface LocalFile {
  path: string;
  content?: string;
}

function readLocal(path: string): LocalFile {
  return existsSync(path) ? { path, content: readFileSync(path, 'utf8') } : { path };
}

/** The key the generating change read back, for the write of .secrets/<host>.env after it. */
const GENERATED_KEY = memoKey<string>('the admin key generate_admin_key.sh printed');

/** Stands for the key in the .env sent to the host, until the host knows the key. */
const KEY_PLACEHOLDER = 'convex-ops-admin-key-placeholder';

const noKey = (host: Host) => `generate_admin_key.sh printed no key of the form ${host.instance_name}|<hex>. Is the backend image a Convex backend?`;

/**
 * One remote command, so that a key is never made and then lost between two: the backend's
 * generate_admin_key.sh, its output checked for a key of this instance, the key put into .env
 * (the file as planned, the key in place of the placeholder, written atomically), and the key
 * printed for `after`. The instance name is [a-z0-9-] (inventory.ts), safe in the pattern.
 */
function generateKeyScript(host: Host, template: string, foreign: boolean): Script {
  return lines(
    sh`set -e`,
    sh`out=$(docker exec ${CONTAINERS.backend} ./generate_admin_key.sh)`,
    sh`key=$(printf '%s\\n' "$out" | sed 's/^[[:space:]]*//; s/[[:space:]]*$//' | grep -E -m 1 ${`^${host.instance_name}[|][0-9a-f]+$`} || true)`,
    sh`[ -n "$key" ] || { echo ${noKey(host)} >&2; exit 1; }`,
    // Beside .env, as its other writes: a run killed here leaves them where the next run removes them.
    sh`template=$(mktemp ${`${tempPrefix(envPath(host))}XXXXXX`}) filled=$(mktemp ${`${tempPrefix(envPath(host))}XXXXXX`})`,
    sh`trap 'rm -f "$template" "$filled"' EXIT`,
    sh`cat > "$template"`,
    sh`[ "$(sha256sum < "$template")" = ${`${sha256(template)}  -`} ] || { echo ${`the content of ${envPath(host)} arrived incomplete; it was not touched`} >&2; exit 1; }`,
    sh`sed "s/^CONVEX_ADMIN_KEY=${KEY_PLACEHOLDER}\$/CONVEX_ADMIN_KEY=$key/" "$template" > "$filled"`,
    sh`grep -qxF "CONVEX_ADMIN_KEY=$key" "$filled"`,
    script`( ${atomicWriteScript({ path: envPath(host), mode: '600' }, foreign)}\n) < "$filled"`,
    sh`printf '%s\\n' "$key"`,
  );
}

/** Generates the key on the host and keeps it in .env; `after` takes it from the script's output. */
function generateKey(host: Host, env: FileState, values: EnvValues): Change {
  const template = envFile(host, new Map([...values, ['CONVEX_ADMIN_KEY', KEY_PLACEHOLDER]])).content;
  return {
    label: 'generate the admin key with generate_admin_key.sh',
    script: generateKeyScript(host, template, env.kind === 'file' && !env.content.includes(MANAGED_MARKER)),
    stdin: template,
    diff: maskedEnvDiff(envPath(host), env.kind === 'file' ? env.content : '', template),
    after: (stdout, memo) => {
      const key = stdout.split('\n').map(l => l.trim()).find(l => ADMIN_KEY.test(l) && l.startsWith(`${host.instance_name}|`));
      if (!key) throw new Error(noKey(host));
      registerSecret(key);
      memo.set(GENERATED_KEY, key);
    },
  };
}

/** The write of .secrets/<host>.env: on this machine, from the key in .env or the one just generated. */
function writeSettings(host: Host, path: string, key?: string): Change {
  return { label: `write ${path}`, after: (_, memo) => writeLocalSecret(path, cliSettings(host, key ?? memo.required(GENERATED_KEY))) };
}

/**
 * The key is generated once: a key of this instance in .env is kept (one of another form is
 * refused, so that it never reaches the operator's shell), and .secrets/<host>.env follows it.
 */
export function planAdminKey(facts: { env: FileState }, host: Host, local: LocalFile): Change[] {
  const values = envOf(facts.env);
  const key = values.get('CONVEX_ADMIN_KEY');
  if (key?.startsWith(`${host.instance_name}|`)) {
    if (!ADMIN_KEY.test(key)) {
      throw new Error(
        `CONVEX_ADMIN_KEY in ${envPath(host)} is not of the form ${host.instance_name}|<hex>, so it is not written to this machine. ` +
          `Remove that line on the droplet and run admin-key.ts again to generate a new key.`,
      );
    }
    return local.content === cliSettings(host, key) ? [] : [writeSettings(host, local.path, key)];
  }
  if (facts.env.kind === 'other') throw new Error(`${envPath(host)} exists but is a ${facts.env.type}, not a regular file. Move it away, then run again.`);
  return [generateKey(host, facts.env, values), writeSettings(host, local.path)];
}

/** The admin key in a .env, when it is one of this instance's. */
function validKey(env: FileState, host: Host): string | undefined {
  const key = envOf(env).get('CONVEX_ADMIN_KEY');
  return key?.startsWith(`${host.instance_name}|`) && ADMIN_KEY.test(key) ? key : undefined;
}

export function adminKey(opts: { local: (...parts: string[]) => string; show: boolean; print: (line: string) => void }): Step {
  const envFact = (host: Host) => ({ env: fileFact(envPath(host)) });
  const summary = (host: Host) => `admin key in ${envPath(host)} and ${localSecretsFile(opts.local, host.name)}`;
  return {
    name: 'admin-key',
    phases: [
      phase({
        facts: envFact,
        plan: (facts, host) => planAdminKey(facts, host, readLocal(localSecretsFile(opts.local, host.name))),
        ok: (_, host) => summary(host),
      }),
      // --show prints the key as .env holds it once the first phase is done (read again after a change).
      ...(opts.show
        ? [
            phase({
              facts: envFact,
              plan: () => [],
              ok: ({ env }, host) => {
                const key = validKey(env, host);
                if (key) opts.print(`${host.name} admin key: ${key}`);
                return summary(host);
              },
            }),
          ]
        : []),
    ],
  };
}
