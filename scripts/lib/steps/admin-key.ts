// The admin key: generated once by the backend's own generate_admin_key.sh, kept in the host's
// .env, and written to the operator's .secrets/<host>.env (mode 0600, git-ignored) so the Convex
// CLI works. It is printed only with --show.
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Step } from '../step.ts';
import { fileFact } from '../files.ts';
import { registerSecret } from '../redact.ts';
import { sh } from '../shell.ts';
import { origins } from './compose.ts';
import { CONTAINERS } from './docker.ts';
import { envPath, readEnv, writeEnv } from './secret.ts';

export function localSecretsFile(local: (...parts: string[]) => string, host: string): string {
  return local('.secrets', `${host}.env`);
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
      if (!key?.startsWith(`${host.instance_name}|`)) {
        if (ctx.check) return void ctx.changes.push('generate the admin key with generate_admin_key.sh');
        const out = await ctx.run(sh`docker exec ${CONTAINERS.backend} ./generate_admin_key.sh`, 'generate_admin_key.sh');
        const generated = out.stdout.split('\n').map(l => l.trim()).find(l => /^[^|\s]+\|[0-9a-f]+$/.test(l));
        if (!generated) throw new Error('generate_admin_key.sh printed no key of the form <instance_name>|<hex>. Is the backend image a Convex backend?');
        registerSecret(generated);
        key = generated;
        env.set('CONVEX_ADMIN_KEY', key);
        ctx.changes.push('generate the admin key');
        await writeEnv(ctx, env);
      }
      const file = localSecretsFile(opts.local, host.name);
      const content = `# Convex CLI settings for ${host.name}: source this file or copy it to .env.local\nCONVEX_SELF_HOSTED_URL=${origins(host).cloud}\nCONVEX_SELF_HOSTED_ADMIN_KEY=${key}\n`;
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
