// A cross-process lock (mkdir is atomic), so parallel test runs on one machine don't
// build the same image or start dockerd twice. A lock whose owner died is taken over.
import fs from 'node:fs/promises';
import path from 'node:path';
import { locksDir } from './paths.ts';
import { sleep } from './proc.ts';

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export async function withLock<T>(name: string, fn: () => Promise<T>, timeoutMs = 20 * 60_000): Promise<T> {
  await fs.mkdir(locksDir, { recursive: true });
  const dir = path.join(locksDir, name.replace(/[^A-Za-z0-9_.-]/g, '_'));
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await fs.mkdir(dir);
      await fs.writeFile(path.join(dir, 'pid'), String(process.pid));
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      const owner = Number(await fs.readFile(path.join(dir, 'pid'), 'utf8').catch(() => ''));
      // No pid yet normally means the owner is between mkdir and writeFile; only a pid-less
      // lock older than a few seconds is an orphan.
      const age = Date.now() - ((await fs.stat(dir).catch(() => undefined))?.mtimeMs ?? Date.now());
      if ((owner > 0 && !isAlive(owner)) || (!owner && age > 10_000)) {
        await fs.rm(dir, { recursive: true, force: true });
        continue;
      }
      if (Date.now() > deadline) throw new Error(`timed out waiting for lock ${dir} (held by pid ${owner || '?'})`);
      await sleep(500);
    }
  }
  try {
    return await fn();
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}
