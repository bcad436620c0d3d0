// The Docker engine the fleet runs on. A running engine is used as is; otherwise, as root on
// Debian/Ubuntu (CI and developer machines here), Debian's docker.io is installed with apt and
// dockerd is started in the background, detached so it outlives the test process.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { spawn } from 'node:child_process';
import { dockerdLog, fleetRoot } from './paths.ts';
import { withLock } from './lock.ts';
import { commandExists, run, waitFor } from './proc.ts';

let hostPackagesChecked = false;
let engineChecked = false;

async function dockerAnswers(): Promise<boolean> {
  return (await run('docker', ['info', '--format', '{{.ServerVersion}}'], { allowFail: true }).catch(() => undefined))?.code === 0;
}

/**
 * Install what the fleet needs on the host when it is missing: docker.io (engine and client)
 * and debootstrap (the base image is built without any image registry). One `apt-get update`.
 */
export async function ensureHostPackages(): Promise<void> {
  if (hostPackagesChecked) return;
  const missing: string[] = [];
  if (!(await commandExists('dockerd')) || !(await commandExists('docker'))) missing.push('docker.io');
  if (!(await commandExists('debootstrap'))) missing.push('debootstrap');
  await installHostPackages(missing);
  hostPackagesChecked = true;
}

/** Debian packages on this machine, with apt, one apt at a time (the bench's ansible too). */
export async function installHostPackages(missing: string[]): Promise<void> {
  if (missing.length === 0) return;
  if (process.getuid?.() !== 0) {
    throw new Error(`the fleet needs ${missing.join(', ')}; install it (apt-get install ${missing.join(' ')}) or run as root`);
  }
  await withLock('apt-host', async () => {
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    process.stderr.write(`[fleet] installing ${missing.join(', ')} on the host\n`);
    await run('apt-get', ['update'], { env });
    await run('apt-get', ['install', '-y', ...missing], { env });
  });
}

/** Make sure `docker info` answers, starting dockerd if needed. */
export async function ensureDockerEngine(): Promise<void> {
  if (engineChecked) return;
  if (!(await dockerAnswers())) {
    await ensureHostPackages();
    await withLock('dockerd', async () => {
      if (await dockerAnswers()) return; // another process started it while we waited
      if (process.getuid?.() !== 0) throw new Error('no Docker engine answers and only root can start dockerd here');
      await fsp.mkdir(fleetRoot, { recursive: true });
      const log = fs.openSync(dockerdLog, 'a');
      process.stderr.write(`[fleet] starting dockerd (log: ${dockerdLog})\n`);
      // detached = its own session (setsid): Ctrl-C on the test run must not stop the engine.
      const daemon = spawn('dockerd', [], { detached: true, stdio: ['ignore', log, log] });
      daemon.unref();
      fs.closeSync(log);
      await waitFor('dockerd to answer `docker info`', 60_000, async () => ((await dockerAnswers()) ? true : undefined)).catch(
        async (error: Error) => {
          const tail = (await fsp.readFile(dockerdLog, 'utf8').catch(() => '')).split('\n').slice(-20).join('\n');
          throw new Error(`${error.message}\n--- ${dockerdLog} ---\n${tail}`);
        },
      );
    });
  }
  engineChecked = true;
}
