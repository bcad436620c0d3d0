// The admin key: generated once by the backend's own generate_admin_key.sh, kept in the host's
// .env, and written to the operator's .secrets/<host>.env (mode 0600, git-ignored) so the Convex
// CLI works. It is printed only with --show.
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Host } from '../inventory.ts';
import { NAME } from '../inventory.ts';
import type { Step } from '../step.ts';
import { fileFact } from '../files.ts';
import { registerSecret } from '../redact.ts';
import { sh } from '../shell.ts';
import { origins } from './compose.ts';
import { CONTAINERS } from './docker.ts';
import { envPath, readEnv, writeEnv } from './secret.ts';

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

export function adminKey(opts: { local: (...parts: string[]) => string; show: boolean; print: (line: string) => void }): Step {
  return {
    name: 'admin-key',
    facts: host => [fileFact(envPath(host))],
    async run(ctx) {
      const { host } = ctx;
      const env = await readEnv(ctx);
      let key = env.get('CONVEX_ADMIN_KEY');
      const ours = (candidate: string | undefined) => candidate?.startsWith(`${host.instance_name}|`);
      if (ours(key) && !ADMIN_KEY.test(key!)) {
        throw new Error(
          `CONVEX_ADMIN_KEY in ${envPath(host)} is not of the form ${host.instance_name}|<hex>, so it is not written to this machine. ` +
            `Remove that line on the droplet and run admin-key.ts again to generate a new key.`,
        );
      }
      if (!ours(key)) {
        if (ctx.check) return void ctx.changes.push('generate the admin key with generate_admin_key.sh');
        const out = await ctx.run(sh`docker exec ${CONTAINERS.backend} ./generate_admin_key.sh`, 'generate_admin_key.sh');
        const generated = out.stdout.split('\n').map(l => l.trim()).find(l => ADMIN_KEY.test(l) && ours(l));
        if (!generated) throw new Error(`generate_admin_key.sh printed no key of the form ${host.instance_name}|<hex>. Is the backend image a Convex backend?`);
        registerSecret(generated);
        key = generated;
        env.set('CONVEX_ADMIN_KEY', key);
        ctx.changes.push('generate the admin key');
        await writeEnv(ctx, env);
      }
      const file = localSecretsFile(opts.local, host.name);
      const content = cliSettings(host, key!);
      const differs = !existsSync(file) || readFileSync(file, 'utf8') !== content;
      if (differs) {
        ctx.changes.push(`write ${file}`);
        if (!ctx.check) writeLocalSecret(file, content);
      }
      if (opts.show) opts.print(`${host.name} admin key: ${key}`);
      return `admin key in ${host.root}/.env and ${file}`;
    },
  };
}
