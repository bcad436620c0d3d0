// Files on the droplet: read (one fact per path), compared, and written atomically — a temporary
// file in the same folder with mode and owner set, then renamed over the live one. A file that
// convex-ops did not write is copied aside (mode 0600) the first time it is replaced. The
// temporary file is checked against the content's hash before the rename, so a connection lost
// mid-transfer can never put a truncated file in place; one left behind by a killed run is
// removed by the next.
import { createHash } from 'node:crypto';
import { dirname, basename } from 'node:path';
import { createRequire } from 'node:module';
import type { Fact } from './step.ts';
import { lines, script, sh } from './shell.ts';
import type { Script } from './shell.ts';

/** The diff library, loaded for the first diff: a run that changes nothing never needs it. */
function createTwoFilesPatch(oldName: string, newName: string, before: string, after: string, oldHeader: string, newHeader: string, options: { context: number }): string {
  const diff = createRequire(import.meta.url)('diff') as typeof import('diff');
  return diff.createTwoFilesPatch(oldName, newName, before, after, oldHeader, newHeader, options);
}

/** Every file convex-ops writes carries this marker, so a foreign file can be told apart. */
export const MANAGED_MARKER = 'Managed by convex-ops';

export type FileState = (
  | { kind: 'absent' }
  | { kind: 'file'; mode: string; owner: string; group: string; content: string }
  | { kind: 'other'; type: string }
) & {
  /** Temporary files of this path left by a run that was killed mid-write. */
  stale?: string[];
};

/** The name prefix of the temporary files a write of `path` makes: hidden, beside it. */
export const tempPrefix = (path: string) => `${dirname(path)}/.${basename(path)}.convex-ops.`;

/**
 * What fileFact runs, for a path given as a Script: a path that only the host can complete (a
 * shell variable in it) reads the same way. `temp` is the path's tempPrefix.
 */
export function readFileScript(path: Script, temp: Script): Script {
  return script`for t in ${temp}??????; do [ -f "$t" ] && printf 'stale %s\\n' "$t"; done; if [ -f ${path} ] && [ ! -L ${path} ]; then stat -c 'file %a %U %G' ${path}; cat ${path}; elif [ -e ${path} ] || [ -L ${path} ]; then stat -c 'other %F' ${path}; else echo absent; fi`;
}

export function fileFact(path: string): Fact<FileState> {
  return {
    key: `file:${path}`,
    command: readFileScript(sh`${path}`, sh`${tempPrefix(path)}`),
    parse: out => {
      const stale: string[] = [];
      while (out.startsWith('stale ')) {
        const end = out.indexOf('\n');
        stale.push(out.slice(6, end));
        out = out.slice(end + 1);
      }
      const extra = stale.length ? { stale } : {};
      const newline = out.indexOf('\n');
      const head = (newline < 0 ? out : out.slice(0, newline)).split(' ');
      if (head[0] === 'file') return { kind: 'file', mode: head[1]!, owner: head[2]!, group: head[3]!, content: newline < 0 ? '' : out.slice(newline + 1), ...extra };
      if (head[0] === 'other') return { kind: 'other', type: head.slice(1).join(' '), ...extra };
      return { kind: 'absent', ...extra };
    },
  };
}

export interface DesiredFile {
  path: string;
  content: string;
  mode: string;
  owner?: string;
  group?: string;
  /** KEY=value files whose diffs show keys but mask every value (maskedEnvDiff). */
  secret?: boolean;
  /** How the change is named in the output, when the path alone says too little. */
  label?: string;
}

export function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

export function unifiedDiff(path: string, before: string, after: string): string {
  return createTwoFilesPatch(path, path, before, after, 'live', 'wanted', { context: 3 });
}

const ENV_LINE = /^(\s*(?:export\s+)?[A-Za-z_][A-Za-z0-9_]*\s*=)(.*)$/;

/**
 * The diff of a KEY=value file of secrets (.env) with every value masked, so a dry run still
 * shows which keys would be added, removed or changed without showing any value. Comments and
 * blank lines are shown; any other line is masked whole.
 */
export function maskedEnvDiff(path: string, before: string, after: string): string {
  const values = new Map<string, string>();
  for (const line of before.split('\n')) {
    const m = ENV_LINE.exec(line);
    if (m) values.set(m[1]!.trim(), m[2]!);
  }
  const mask = (text: string, previous?: Map<string, string>) =>
    text
      .split('\n')
      .map(line => {
        if (!line.trim() || line.trim().startsWith('#')) return line;
        const m = ENV_LINE.exec(line);
        if (!m) return '********';
        if (!m[2]) return line;
        const old = previous?.get(m[1]!.trim());
        return `${m[1]}********${old !== undefined && old !== m[2] ? ' (changed)' : ''}`;
      })
      .join('\n');
  return createTwoFilesPatch(path, path, mask(before), mask(after, values), 'live (values masked)', 'wanted (values masked)', { context: 3 });
}


/**
 * The remote side of a write: the content arrives on stdin into a temporary file in the same
 * folder, is checked against its SHA-256 (a connection lost mid-transfer ends stdin early, and
 * `cat` cannot tell), gets its mode and owner, and is renamed over the live file. A killed or
 * failed write removes its temporary file; nothing else ever replaces the live one.
 */
export function atomicWriteScript(want: { path: string; mode: string; owner?: string; group?: string }, keepOriginal: boolean, contentSha256?: string): Script {
  const owner = want.owner ?? 'root';
  const group = want.group ?? owner;
  const dir = dirname(want.path);
  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\..*/, '');
  const original = `${want.path}.orig-convex-ops-${stamp}`;
  return lines(
    sh`set -e`,
    sh`mkdir -p ${dir}`,
    sh`tmp=$(mktemp ${`${tempPrefix(want.path)}XXXXXX`})`,
    sh`trap 'rm -f "$tmp"' EXIT`,
    sh`trap 'exit 129' HUP INT TERM PIPE`,
    sh`cat > "$tmp"`,
    contentSha256
      ? sh`[ "$(sha256sum < "$tmp")" = ${`${contentSha256}  -`} ] || { echo ${`the content of ${want.path} arrived incomplete; the live file was not touched`} >&2; exit 1; }`
      : sh`:`,
    sh`chmod ${want.mode} "$tmp"`,
    sh`chown ${`${owner}:${group}`} "$tmp"`,
    // The copy aside is 0600 whatever the original's mode (never readable for a moment either):
    // a foreign file may hold secrets, and nothing guards the copy as its reader guarded it.
    keepOriginal ? sh`(umask 077 && cp --preserve=ownership,timestamps ${want.path} ${original} && chmod 600 ${original})` : sh`:`,
    sh`mv -f "$tmp" ${want.path}`,
    sh`trap - EXIT`,
  );
}


export type PathKind = 'absent' | 'dir' | 'file' | `link:${string}` | 'other';

export function pathKindFact(path: string): Fact<PathKind> {
  return {
    key: `kind:${path}`,
    command: sh`if [ -L ${path} ]; then printf 'link:%s' "$(readlink ${path})"; elif [ -d ${path} ]; then echo dir; elif [ -f ${path} ]; then echo file; elif [ -e ${path} ]; then echo other; else echo absent; fi`,
    parse: out => out.trim() as PathKind,
  };
}
