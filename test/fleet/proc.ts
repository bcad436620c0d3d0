// Child processes for the fleet: always an argument array, never a shell string
// built by hand, so names and paths with odd characters cannot break a command.
import { spawn } from 'node:child_process';
import type { Readable } from 'node:stream';

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  /** Return the result on a non-zero exit instead of throwing. */
  allowFail?: boolean;
  /** Data written to the child's stdin (a string, a Buffer, or a stream piped in). */
  input?: string | Buffer | Readable;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Also copy the child's output to this process's stderr, for long steps worth watching. */
  echo?: boolean;
}

export class CommandError extends Error {
  readonly result: RunResult;
  constructor(command: string, args: readonly string[], result: RunResult) {
    const tail = (result.stderr.trim() || result.stdout.trim()).split('\n').slice(-15).join('\n');
    super(`${command} ${args.join(' ')} exited with ${result.code}\n${tail}`);
    this.name = 'CommandError';
    this.result = result;
  }
}

export function run(command: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: options.cwd,
      env: options.env ?? process.env,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (chunk: Buffer) => {
      out.push(chunk);
      if (options.echo) process.stderr.write(chunk);
    });
    child.stderr.on('data', (chunk: Buffer) => {
      err.push(chunk);
      if (options.echo) process.stderr.write(chunk);
    });
    child.on('error', reject);
    child.on('close', (code, signal) => {
      const result: RunResult = {
        code: code ?? (signal ? 128 : 1),
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
      };
      if (result.code !== 0 && !options.allowFail) reject(new CommandError(command, args, result));
      else resolve(result);
    });
    // A child that exits without reading its stdin must not crash us with EPIPE.
    child.stdin.on('error', () => {});
    const input = options.input;
    if (input === undefined) child.stdin.end();
    else if (typeof input === 'string' || Buffer.isBuffer(input)) child.stdin.end(input);
    else input.pipe(child.stdin);
  });
}

/** `docker ARGS...`; throws with the tail of stderr on failure unless allowFail. */
export function docker(args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  return run('docker', args, options);
}

/** stdout of a successful `docker ARGS...`, trimmed. */
export async function dockerOut(args: readonly string[], options: RunOptions = {}): Promise<string> {
  return (await docker(args, options)).stdout.trim();
}

export async function commandExists(name: string): Promise<boolean> {
  const found = await run('sh', ['-c', 'command -v "$1"', 'sh', name], { allowFail: true });
  return found.code === 0;
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Settle like `promise`, or reject after `ms`. The timer also keeps the event loop alive: a
 *  probe whose promise never settles and holds no handle (seen with fetch against a port that
 *  docker-proxy accepts before the service listens) must not let node exit with "unsettled
 *  top-level await". */
export function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Thrown by a waitFor probe to stop waiting at once (the thing waited for can't happen). */
export class GiveUp extends Error {}

/** Poll `probe` until it returns a value other than undefined, or fail after `timeoutMs`. */
export async function waitFor<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      // One probe may take long on a loaded machine: it gets the time left, and at least 10 s.
      const value = await withTimeout(probe(), Math.max(10_000, deadline - Date.now()), what);
      if (value !== undefined) return value;
    } catch (error) {
      if (error instanceof GiveUp) throw error;
      lastError = error;
    }
    if (Date.now() > deadline) {
      const detail = lastError instanceof Error ? `: ${lastError.message}` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${detail}`);
    }
    await sleep(200);
  }
}
