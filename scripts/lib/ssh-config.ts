// What OpenSSH's client config says about a host, read as `ssh` reads it: the first value obtained
// for a keyword wins, Host patterns with * ? and !, Match host/originalhost/user/all, and Include
// (relative paths under ~/.ssh, globs, only inside blocks that apply). The `ssh-config` package
// parses the files; the evaluation is done here because its compute() neither follows Include
// nor stays side-effect free (it runs Match exec commands and nslookup).
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { homedir, userInfo } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';
import SSHConfig, { glob } from 'ssh-config';
import type { Directive, Line, Match, Section } from 'ssh-config';

/** The settings of one host that convex-ops uses; everything else that matters is in `ignored`. */
export interface SshSettings {
  hostName?: string;
  user?: string;
  port?: number;
  /** Every IdentityFile that applies, ~ and %-tokens expanded, in the order given. */
  identityFiles: string[];
  identitiesOnly: boolean;
  userKnownHostsFile?: string;
  /** ProxyJump as written: "none", or hops separated by commas. */
  proxyJump?: string;
  /** Keywords that change where or how OpenSSH would connect, which convex-ops does not do. */
  ignored: string[];
}

export class SshConfigError extends Error {}

/**
 * Keywords convex-ops does not act on but that change where or how OpenSSH connects: with them
 * ignored, a run could reach another machine or miss a tunnel the operator relies on.
 */
const IGNORED = ['ProxyCommand', 'LocalForward', 'RemoteForward', 'DynamicForward', 'HostKeyAlias', 'CanonicalizeHostname', 'BindAddress', 'BindInterface', 'AddressFamily', 'CertificateFile', 'Tunnel', 'ProxyUseFdpass'];
const IGNORED_BY_KEY = new Map(IGNORED.map(k => [k.toLowerCase(), k]));
/** Match criteria evaluated here; any other (exec, canonical, final, tagged, localnetwork) makes the block unusable. */
const MATCH_CRITERIA = new Set(['all', 'host', 'originalhost', 'user', 'localuser']);
/** As OpenSSH: deeper Include nesting is a loop. */
const MAX_INCLUDE_DEPTH = 16;

export class SshConfig {
  /** The file first read; Include'd files are read as they are reached. */
  readonly path: string;
  private readonly parsed = new Map<string, SSHConfig>();

  constructor(path: string) {
    this.path = path;
  }

  private parse(file: string): SSHConfig {
    let config = this.parsed.get(file);
    if (!config) {
      let text: string;
      try {
        text = readFileSync(file, 'utf8');
      } catch (error) {
        throw new SshConfigError(`${file}: cannot read this ssh config file (${(error as NodeJS.ErrnoException).code ?? (error as Error).message}).`);
      }
      config = SSHConfig.parse(text);
      this.parsed.set(file, config);
    }
    return config;
  }

  /** The settings for `alias` as `ssh alias` (or `ssh -l user alias` when user is given) would use them. */
  lookup(alias: string, opts: { user?: string } = {}): SshSettings {
    const found = new Map<string, string>();
    const identityFiles: string[] = [];
    const ignored = new Set<string>();
    const localUser = userInfo().username;
    const state = { hostName: alias, user: opts.user };
    const obtain = (directive: Directive) => {
      const keyword = directive.param.toLowerCase();
      const value = valueOf(directive);
      const skipped = IGNORED_BY_KEY.get(keyword);
      // CanonicalizeHostname no and AddressFamily any change nothing.
      if (skipped && !/^(no|any)$/i.test(value)) ignored.add(skipped);
      if (keyword === 'identityfile') identityFiles.push(value);
      else if (!found.has(keyword)) {
        found.set(keyword, value);
        if (keyword === 'hostname') state.hostName = value;
        if (keyword === 'user' && state.user === undefined) state.user = value;
      }
    };
    const applies = (line: Section): boolean => {
      if (line.param.toLowerCase() === 'host') return glob(valueList(line).map(p => p.toLowerCase()), alias.toLowerCase());
      const criteria = Object.entries((line as Match).criteria ?? {}).map(([key, value]) => [key.toLowerCase(), Array.isArray(value) ? value.map(v => v.val).join(',') : value] as const);
      if (criteria.some(([key]) => !MATCH_CRITERIA.has(key))) {
        throw new SshConfigError(`${this.path}: "Match ${valueOf(line)}" uses a criterion convex-ops cannot evaluate (it understands all, host, originalhost, user and localuser). Rewrite it as a Host block, or as Match host.`);
      }
      return criteria.every(([key, patterns]) => {
        const subject = key === 'host' ? state.hostName : key === 'originalhost' ? alias : key === 'user' ? (state.user ?? localUser) : localUser;
        return key === 'all' || glob(patterns.split(','), subject);
      });
    };
    const walk = (lines: Line[], file: string, depth: number) => {
      let active = true;
      for (const line of lines) {
        if (line.type !== SSHConfig.DIRECTIVE) continue;
        if ('config' in line) {
          active = applies(line);
          if (active) walk(line.config, file, depth);
        } else if (!active) {
          continue;
        } else if (line.param.toLowerCase() === 'include') {
          if (depth >= MAX_INCLUDE_DEPTH) throw new SshConfigError(`${file}: Include is nested more than ${MAX_INCLUDE_DEPTH} deep; it probably includes itself.`);
          for (const included of includedFiles(valueList(line))) walk(this.parse(included), included, depth + 1);
        } else {
          obtain(line);
        }
      }
    };
    walk(this.parse(this.path), this.path, 0);

    const user = opts.user ?? found.get('user');
    const hostName = found.get('hostname');
    const tokens: Record<string, string> = { '%': '%', h: hostName ?? alias, n: alias, r: user ?? localUser, u: localUser, d: homedir(), p: found.get('port') ?? '22' };
    const expand = (text: string) => expandHome(text.replace(/%(.)/g, (whole, token: string) => tokens[token] ?? whole));
    const port = found.get('port');
    if (port !== undefined && !/^\d{1,5}$/.test(port)) throw new SshConfigError(`${this.path}: Port ${JSON.stringify(port)} for ${alias} is not a TCP port.`);
    return {
      hostName: hostName === undefined ? undefined : hostName.replace(/%h/g, alias).replace(/%%/g, '%'),
      user,
      port: port === undefined ? undefined : Number(port),
      identityFiles: identityFiles.filter(f => f.toLowerCase() !== 'none').map(expand),
      identitiesOnly: found.get('identitiesonly')?.toLowerCase() === 'yes',
      userKnownHostsFile: found.has('userknownhostsfile') ? expand(found.get('userknownhostsfile')!.split(/\s+/)[0]!) : undefined,
      proxyJump: found.get('proxyjump'),
      ignored: [...ignored],
    };
  }

  /** Aliases the files name outright (Host patterns without wildcards), for "did you mean". */
  aliases(): string[] {
    const names = new Set<string>();
    const collect = (lines: Line[], depth: number) => {
      for (const line of lines) {
        if (line.type !== SSHConfig.DIRECTIVE) continue;
        if ('config' in line) {
          if (line.param.toLowerCase() === 'host') valueList(line).filter(p => !/[*?!]/.test(p)).forEach(p => names.add(p));
          collect(line.config, depth);
        } else if (line.param.toLowerCase() === 'include' && depth < MAX_INCLUDE_DEPTH) {
          for (const file of includedFiles(valueList(line))) collect(this.parse(file), depth + 1);
        }
      }
    };
    collect(this.parse(this.path), 0);
    return [...names];
  }
}

function valueList(directive: Directive): string[] {
  return typeof directive.value === 'string' ? directive.value.split(/\s+/).filter(Boolean) : directive.value.map(v => v.val);
}

function valueOf(directive: Directive): string {
  return typeof directive.value === 'string' ? directive.value : directive.value.map(v => v.val).join(' ');
}

export function expandHome(path: string): string {
  return path === '~' || path.startsWith('~/') ? join(homedir(), path.slice(2)) : path;
}

/** As OpenSSH: a relative Include is under ~/.ssh; globs expand in sorted order; a missing file is no error. */
function includedFiles(patterns: string[]): string[] {
  return patterns.flatMap(pattern => {
    const path = expandHome(pattern);
    return expandGlob(isAbsolute(path) ? path : resolve(homedir(), '.ssh', path));
  });
}

function expandGlob(path: string): string[] {
  if (!/[*?[]/.test(path)) return existsSync(path) ? [path] : [];
  const parts = path.split('/');
  const wild = parts.findIndex(p => /[*?[]/.test(p));
  const base = parts.slice(0, wild).join('/') || '/';
  const pattern = new RegExp('^' + parts[wild]!.replace(/[.+^${}()|\\]/g, '\\$&').replace(/\*/g, '[^/]*').replace(/\?/g, '[^/]') + '$');
  let entries: string[];
  try {
    entries = readdirSync(base).filter(name => pattern.test(name) && !name.startsWith('.')).sort();
  } catch {
    return [];
  }
  const rest = parts.slice(wild + 1);
  return entries.flatMap(name => (rest.length ? expandGlob([base, name, ...rest].join('/')) : [join(base, name)]));
}

/** Which ssh config a host's settings come from: the inventory's ssh_config, $CONVEX_OPS_SSH_CONFIG, or ~/.ssh/config if it exists. */
export function sshConfigPath(fromInventory: string | undefined): string | undefined {
  if (fromInventory) return fromInventory;
  const fromEnvironment = process.env.CONVEX_OPS_SSH_CONFIG;
  if (fromEnvironment) return resolve(expandHome(fromEnvironment));
  const standard = join(homedir(), '.ssh', 'config');
  return existsSync(standard) ? standard : undefined;
}
