// The transport: one SSH connection per host for a whole run. Every remote command is a POSIX sh
// script run as root (through `sudo -n` for any other user); files travel on stdin. Nothing
// outside this file knows about SSH.
import { readFileSync } from 'node:fs';
import { NodeSSH } from 'node-ssh';
import type { Channel, ClientChannel } from 'ssh2';
import pRetry, { AbortError } from 'p-retry';
import { isIP } from 'node:net';
import type { Endpoint, Host } from './inventory.ts';
import { SshConfig } from './ssh-config.ts';
import { HostKeyError, knownKeysFor, verifyHostKey } from './known-hosts.ts';
import { quote } from './shell.ts';
import type { Script } from './shell.ts';
import { redact } from './redact.ts';

export interface RunResult { code: number; stdout: string; stderr: string }
export interface RunOptions {
  stdin?: string;
  /** Return the result instead of throwing when the command exits non-zero. */
  allowFail?: boolean;
  /** Called with each chunk of output, for progress display of long commands. */
  onOutput?: (chunk: string) => void;
}

export class RemoteError extends Error {
  readonly result: RunResult;
  constructor(host: string, what: string, result: RunResult) {
    const detail = (result.stderr.trim() || result.stdout.trim()).split('\n').slice(-15).join('\n');
    super(redact(`${host}: ${what} failed (exit ${result.code})${detail ? `:\n${detail}` : ''}`));
    this.result = result;
  }
}

export class ConnectionError extends Error {}

const TRANSIENT = /ECONNREFUSED|ECONNRESET|ETIMEDOUT|EHOSTUNREACH|EPIPE|Timed out while waiting for handshake|Connection lost before handshake|Not connected|No response from server/i;

/** What a connection is opened with: where to, and whether an unknown host key may be recorded. */
interface OpenOptions { acceptNew: boolean; retries?: number }

export class Connection {
  readonly host: Host;
  commands = 0;
  /** The connection dropped (reset, timeout, the droplet went away). */
  lost = false;
  /** What ssh2 said when it dropped, e.g. "Keepalive timeout" when the droplet went silent. */
  private lostReason?: string;
  private readonly ssh: NodeSSH;
  /** Given back when this connection closes: the bastion it goes through. */
  private readonly releaseBastion?: () => void;

  private constructor(host: Host, ssh: NodeSSH, releaseBastion?: () => void) {
    this.host = host;
    this.ssh = ssh;
    this.releaseBastion = releaseBastion;
  }

  static async open(host: Host, opts: OpenOptions): Promise<Connection> {
    const hops = host.jump ?? [];
    const bastion = hops.length ? await Bastion.acquire(hops, opts) : undefined;
    try {
      const ssh = await openRetrying(host, opts, bastion);
      const connection = new Connection(host, ssh, bastion && (() => bastion.release()));
      // A socket error after the handshake (a reset, a dead peer) would otherwise be an unhandled
      // 'error' event that kills the whole run; the command in flight fails instead, for this host only.
      ssh.connection?.on('error', (error: Error) => (connection.lostReason ??= error.message));
      ssh.connection?.on('close', () => (connection.lost = true));
      return connection;
    } catch (error) {
      bastion?.release();
      throw error;
    }
  }

  /** Wraps a script so it runs as root under sh with a predictable locale, whoever logs in. */
  private wrap(script: string): string {
    const body = `export LC_ALL=C DEBIAN_FRONTEND=noninteractive PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin; ${script}`;
    return this.host.user === 'root' ? `sh -c ${quote(body)}` : `sudo -n sh -c ${quote(body)}`;
  }

  async run(script: Script, what: string, opts: RunOptions = {}): Promise<RunResult> {
    this.commands++;
    let result: RunResult;
    try {
      const response = await this.ssh.execCommand(this.wrap(script), {
        stdin: opts.stdin,
        noTrim: true,
        onStdout: opts.onOutput ? chunk => opts.onOutput!(chunk.toString()) : undefined,
        onStderr: opts.onOutput ? chunk => opts.onOutput!(chunk.toString()) : undefined,
      });
      result = { code: response.code ?? 255, stdout: response.stdout, stderr: response.stderr };
      if (response.code === null && this.lost) throw new Error(this.lostReason ?? 'the connection closed');
    } catch (error) {
      throw new ConnectionError(redact(`${this.host.name}: connection lost during "${what}": ${(error as Error).message}. Run again: every step is safe to repeat.`));
    }
    if (this.host.user !== 'root' && result.code !== 0 && /sudo: (a password is required|a terminal is required)/.test(result.stderr)) {
      throw new ConnectionError(`${this.host.name}: ${this.host.user} cannot use sudo without a password. Give it NOPASSWD sudo (e.g. "${this.host.user} ALL=(ALL) NOPASSWD:ALL" in /etc/sudoers.d/) or connect as root.`);
    }
    if (result.code !== 0 && !opts.allowFail) throw new RemoteError(this.host.name, what, result);
    return result;
  }

  /**
   * Starts a command whose stdin stays open until release() is called or the connection drops.
   * Used for the run lock: the remote side holds the lock exactly as long as this channel lives.
   */
  async hold(script: Script, onLine: (line: string, stream: 'stdout' | 'stderr') => void): Promise<{ release: () => void; exited: Promise<number> }> {
    this.commands++;
    const client = this.ssh.connection;
    if (!client) throw new ConnectionError(`${this.host.name}: not connected`);
    const channel = await new Promise<ClientChannel>((resolve, reject) =>
      client.exec(this.wrap(script), (error, stream) => (error ? reject(error) : resolve(stream))),
    );
    let buffer = '';
    // A character split across two chunks is decoded whole.
    channel.setEncoding('utf8');
    channel.on('data', (chunk: string) => {
      buffer += chunk;
      let newline: number;
      while ((newline = buffer.indexOf('\n')) >= 0) {
        onLine(buffer.slice(0, newline), 'stdout');
        buffer = buffer.slice(newline + 1);
      }
    });
    channel.stderr.on('data', (chunk: Buffer) => onLine(chunk.toString().trim(), 'stderr'));
    const exited = new Promise<number>(resolve => channel.on('close', (code: number | null) => resolve(code ?? 255)));
    return { release: () => channel.end(), exited };
  }

  close(): void {
    this.ssh.dispose();
    this.releaseBastion?.();
  }
}

/**
 * A bastion's connection, opened once for the run and shared by every host behind it. It closes
 * once no host has used it for a moment, so hosts run one after another (--parallel 1) share it
 * too. A bastion that refuses (its host key, the login) refuses every host behind it, without
 * asking again.
 */
class Bastion {
  private static readonly open = new Map<string, Promise<Bastion>>();
  /** How long an unused bastion connection stays open for the next host. */
  private static readonly IDLE_MS = 2000;
  readonly endpoint: Endpoint;
  readonly ssh: NodeSSH;
  private users = 0;
  private idle?: ReturnType<typeof setTimeout>;
  /** Takes it out of the run's bastions, so that the next host connects afresh. */
  private readonly forget: () => void;
  /** Gives back the bastion this one is reached through. */
  private readonly releaseBefore: () => void;

  private constructor(endpoint: Endpoint, ssh: NodeSSH, forget: () => void, releaseBefore: () => void) {
    this.endpoint = endpoint;
    this.ssh = ssh;
    this.forget = forget;
    this.releaseBefore = releaseBefore;
  }

  /** The last of `hops`, reached through the ones before it. */
  static async acquire(hops: Endpoint[], opts: OpenOptions): Promise<Bastion> {
    const key = hops.map(h => `${h.user}@${h.address}:${h.port}:${h.identity ?? 'agent'}:${h.known_hosts}`).join(' ');
    let pending = Bastion.open.get(key);
    if (!pending) {
      pending = (async () => {
        const endpoint = hops[hops.length - 1]!;
        const before = hops.length > 1 ? await Bastion.acquire(hops.slice(0, -1), opts) : undefined;
        try {
          const ssh = await openRetrying(endpoint, opts, before);
          const forget = () => Bastion.open.get(key) === pending && Bastion.open.delete(key);
          // A bastion that drops fails the commands in flight on the hosts behind it, which say so.
          ssh.connection?.on('error', () => {});
          ssh.connection?.on('close', forget);
          return new Bastion(endpoint, ssh, forget, () => before?.release());
        } catch (error) {
          before?.release();
          throw error;
        }
      })();
      Bastion.open.set(key, pending);
    }
    const bastion = await pending;
    bastion.users++;
    clearTimeout(bastion.idle);
    return bastion;
  }

  release(): void {
    if (--this.users > 0) return;
    this.idle = setTimeout(() => {
      this.forget();
      this.ssh.dispose();
      this.releaseBefore();
    }, Bastion.IDLE_MS);
  }

  /** A TCP stream from the bastion to address:port (a direct-tcpip channel), for an SSH connection over it. */
  async tunnel(to: Endpoint): Promise<Channel> {
    try {
      return await this.ssh.forwardOut('127.0.0.1', 0, to.address, to.port);
    } catch (error) {
      const message = (error as Error).message;
      // sshd answers a name it cannot resolve with getaddrinfo's words.
      if (/name|resol/i.test(message) && isName(to.address)) throw new AbortError(new ConnectionError(unknownName(to, this.endpoint.name)));
      // Anything else ("Connection refused" while sshd starts) is worth another try.
      throw new ConnectionError(`${to.name}: the bastion ${this.endpoint.name} cannot reach ${to.address}:${to.port}: ${message}`);
    }
  }
}

const isName = (address: string) => isIP(address.replace(/^\[|\]$/g, '')) === 0;

/** An address nothing resolves: a name that is neither in DNS nor an alias of the ssh config. */
function unknownName(to: Endpoint, resolver?: string): string {
  const aliases = to.ssh_config ? new SshConfig(to.ssh_config).aliases() : [];
  const where = to.ssh_config ?? '~/.ssh/config (there is none)';
  return (
    `${to.name}: "${to.address}" is neither an alias in ${where} nor a name ${resolver ? `the bastion ${resolver}` : 'this machine'} can resolve. ` +
    `${aliases.length ? `Aliases there: ${aliases.join(', ')}. ` : ''}Add "Host ${to.address}" with its HostName to the ssh config, or give the address itself.`
  );
}

/** Connects to one endpoint (directly, or through a bastion), retrying what is transient. */
async function openRetrying(endpoint: Endpoint, opts: OpenOptions, through?: Bastion): Promise<NodeSSH> {
  const ssh = new NodeSSH();
  await pRetry(() => connectOnce(ssh, endpoint, opts.acceptNew, through), {
    retries: opts.retries ?? 4,
    minTimeout: 500,
    maxTimeout: 4000,
    shouldRetry: ({ error }) => TRANSIENT.test(error.message) || /cannot reach/.test(error.message),
  });
  return ssh;
}

async function connectOnce(ssh: NodeSSH, endpoint: Endpoint, acceptNew: boolean, through?: Bastion): Promise<void> {
  let rejection: Error | undefined;
  // An ssh-rsa key is signed with rsa-sha2-512/256 by current servers (OpenSSH 8.8 refuses SHA-1).
  const knownTypes = [...new Set(knownKeysFor(endpoint.known_hosts, endpoint.address, endpoint.port).flatMap(k => (k.type === 'ssh-rsa' ? ['rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa'] : [k.type])))];
  const credentials = credentialsOf(endpoint);
  const via = through ? ` through the bastion ${through.endpoint.name}` : '';
  const where = through ? { sock: await through.tunnel(endpoint) } : { host: endpoint.address, port: endpoint.port };
  try {
    await ssh.connect({
      ...where,
      username: endpoint.user,
      readyTimeout: 20_000,
      keepaliveInterval: 10_000,
      keepaliveCountMax: 3,
      ...credentials,
      // Straight to the one method we have: without this, ssh2 first tries "none", which
      // costs a round trip to learn what the server would have told it anyway.
      authHandler: ['agent' in credentials ? 'agent' : 'publickey'],
      // Offer only the key types we already know for this host, as OpenSSH does, so that a
      // host known by its ed25519 key is not asked for an ECDSA key we cannot check.
      ...(knownTypes.length ? { algorithms: { serverHostKey: knownTypes as never } } : {}),
      // Each host's key is checked under its own address, the bastion's and the droplet's alike.
      hostVerifier: (key: Buffer) => {
        try {
          verifyHostKey({ file: endpoint.known_hosts, host: endpoint.name, address: endpoint.address, port: endpoint.port, acceptNew, presented: key });
          return true;
        } catch (error) {
          rejection = error as Error;
          return false;
        }
      },
    });
  } catch (error) {
    if (rejection) throw new AbortError(rejection);
    const message = (error as Error).message;
    if (endpoint.identity && /Cannot parse privateKey|passphrase/i.test(message)) {
      const hint = endpoint.identity_passphrase_env
        ? `Check that ${endpoint.identity_passphrase_env} holds its passphrase.`
        : `If it is encrypted, set identity_passphrase_env to the name of a variable that holds its passphrase, or add it to ssh-agent and remove identity.`;
      throw new AbortError(new ConnectionError(`${endpoint.name}: cannot use the identity ${endpoint.identity}: ${message}. ${hint}`));
    }
    if (/authentication methods failed/i.test(message)) {
      throw new AbortError(new ConnectionError(`${endpoint.name}: SSH login as ${endpoint.user}@${endpoint.address}:${endpoint.port}${via} was refused. Check identity (${endpoint.identity ?? 'ssh-agent'}) and that the key is in ~${endpoint.user}/.ssh/authorized_keys.`));
    }
    if (/ENOTFOUND|EAI_AGAIN|EAI_NONAME/.test(message) && isName(endpoint.address)) throw new AbortError(new ConnectionError(unknownName(endpoint)));
    const failure = new ConnectionError(`${endpoint.name}: cannot connect to ${endpoint.address}:${endpoint.port}${via}: ${message}`);
    throw TRANSIENT.test(message) ? failure : new AbortError(failure);
  }
}

function credentialsOf(endpoint: Endpoint): Record<string, string> {
  if (endpoint.identity) {
    let privateKey: string;
    try {
      privateKey = readFileSync(endpoint.identity, 'utf8');
    } catch {
      throw new AbortError(new ConnectionError(`${endpoint.name}: cannot read identity ${endpoint.identity}. Fix identity (or IdentityFile in the ssh config), or remove it to use ssh-agent.`));
    }
    const passphrase = endpoint.identity_passphrase_env ? process.env[endpoint.identity_passphrase_env] : undefined;
    if (endpoint.identity_passphrase_env && passphrase === undefined) {
      throw new AbortError(new ConnectionError(`${endpoint.name}: the identity's passphrase variable ${endpoint.identity_passphrase_env} is not set. Export it before running.`));
    }
    return passphrase ? { privateKey, passphrase } : { privateKey };
  }
  if (process.env.SSH_AUTH_SOCK) return { agent: process.env.SSH_AUTH_SOCK };
  throw new AbortError(new ConnectionError(`${endpoint.name}: no identity configured and no ssh-agent (SSH_AUTH_SOCK) running. Set identity (or IdentityFile in the ssh config) or start ssh-agent.`));
}

export { HostKeyError };
