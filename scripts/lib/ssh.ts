// The transport: one SSH connection per host for a whole run. Every remote command is a POSIX sh
// script run as root (through `sudo -n` for any other user); files travel on stdin. Nothing
// outside this file knows about SSH.
import { readFileSync } from 'node:fs';
import { NodeSSH } from 'node-ssh';
import type { ClientChannel } from 'ssh2';
import pRetry, { AbortError } from 'p-retry';
import type { Host } from './inventory.ts';
import { HostKeyError, knownKeysFor, verifyHostKey } from './known-hosts.ts';
import { quote } from './shell.ts';
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

export class Connection {
  readonly host: Host;
  commands = 0;
  /** The connection dropped (reset, timeout, the droplet went away). */
  lost = false;
  /** What ssh2 said when it dropped, e.g. "Keepalive timeout" when the droplet went silent. */
  private lostReason?: string;
  private readonly ssh = new NodeSSH();

  private constructor(host: Host) {
    this.host = host;
  }

  static async open(host: Host, opts: { acceptNew: boolean; retries?: number }): Promise<Connection> {
    const connection = new Connection(host);
    await pRetry(() => connection.connectOnce(opts.acceptNew), {
      retries: opts.retries ?? 4,
      minTimeout: 500,
      maxTimeout: 4000,
      shouldRetry: ({ error }) => TRANSIENT.test(error.message),
    });
    // A socket error after the handshake (a reset, a dead peer) would otherwise be an unhandled
    // 'error' event that kills the whole run; the command in flight fails instead, for this host only.
    connection.ssh.connection?.on('error', (error: Error) => (connection.lostReason ??= error.message));
    connection.ssh.connection?.on('close', () => (connection.lost = true));
    return connection;
  }

  private async connectOnce(acceptNew: boolean): Promise<void> {
    const { host } = this;
    let rejection: Error | undefined;
    // An ssh-rsa key is signed with rsa-sha2-512/256 by current servers (OpenSSH 8.8 refuses SHA-1).
    const knownTypes = [...new Set(knownKeysFor(host.known_hosts, host.address, host.port).flatMap(k => (k.type === 'ssh-rsa' ? ['rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa'] : [k.type])))];
    try {
      const credentials = this.credentials();
      await this.ssh.connect({
        host: host.address,
        port: host.port,
        username: host.user,
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
        hostVerifier: (key: Buffer) => {
          try {
            verifyHostKey({ file: host.known_hosts, host: host.name, address: host.address, port: host.port, acceptNew, presented: key });
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
      if (host.identity && /Cannot parse privateKey|passphrase/i.test(message)) {
        const hint = host.identity_passphrase_env
          ? `Check that ${host.identity_passphrase_env} holds its passphrase.`
          : `If it is encrypted, set hosts.${host.name}.identity_passphrase_env to the name of a variable that holds its passphrase, or add it to ssh-agent and remove identity.`;
        throw new AbortError(new ConnectionError(`${host.name}: cannot use the identity ${host.identity}: ${message}. ${hint}`));
      }
      if (/authentication methods failed/i.test(message)) {
        throw new AbortError(new ConnectionError(`${host.name}: SSH login as ${host.user}@${host.address}:${host.port} was refused. Check identity (${host.identity ?? 'ssh-agent'}) and that the key is in ~${host.user}/.ssh/authorized_keys.`));
      }
      if (TRANSIENT.test(message)) throw new ConnectionError(`${host.name}: cannot connect to ${host.address}:${host.port}: ${message}`);
      throw new AbortError(new ConnectionError(`${host.name}: cannot connect to ${host.address}:${host.port}: ${message}`));
    }
  }

  private credentials(): Record<string, string> {
    const { host } = this;
    if (host.identity) {
      let privateKey: string;
      try {
        privateKey = readFileSync(host.identity, 'utf8');
      } catch {
        throw new AbortError(new ConnectionError(`${host.name}: cannot read identity ${host.identity}. Fix hosts.${host.name}.identity, or remove it to use ssh-agent.`));
      }
      const passphrase = host.identity_passphrase_env ? process.env[host.identity_passphrase_env] : undefined;
      if (host.identity_passphrase_env && passphrase === undefined) {
        throw new AbortError(new ConnectionError(`${host.name}: the identity's passphrase variable ${host.identity_passphrase_env} is not set. Export it before running.`));
      }
      return passphrase ? { privateKey, passphrase } : { privateKey };
    }
    if (process.env.SSH_AUTH_SOCK) return { agent: process.env.SSH_AUTH_SOCK };
    throw new AbortError(new ConnectionError(`${host.name}: no identity configured and no ssh-agent (SSH_AUTH_SOCK) running. Set hosts.${host.name}.identity or start ssh-agent.`));
  }

  /** Wraps a script so it runs as root under sh with a predictable locale, whoever logs in. */
  private wrap(script: string): string {
    const body = `export LC_ALL=C DEBIAN_FRONTEND=noninteractive PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin; ${script}`;
    return this.host.user === 'root' ? `sh -c ${quote(body)}` : `sudo -n sh -c ${quote(body)}`;
  }

  async run(script: string, what: string, opts: RunOptions = {}): Promise<RunResult> {
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
  async hold(script: string, onLine: (line: string, stream: 'stdout' | 'stderr') => void): Promise<{ release: () => void; exited: Promise<number> }> {
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
  }
}

export { HostKeyError };
