// The bench's arithmetic and readings, shared by its parts.
import { readFileSync } from 'node:fs';

export const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

export const round = (x: number, digits = 2): number => Number(x.toFixed(digits));

/** Busy and total jiffies of all CPUs so far (/proc/stat's first line; idle and iowait are not busy). */
function cpuJiffies(): { busy: number; total: number } {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1, 9).map(Number);
  const total = fields.reduce((sum, f) => sum + f, 0);
  return { busy: total - fields[3]! - fields[4]!, total };
}

/**
 * How busy the machine's CPUs were (0–100 %) over the `ms` just passed: what else shares the CPUs
 * with the run about to be measured. Not the load average: the paused droplets' frozen tasks
 * wait uninterruptibly, and so count in it (95 of them held it near 13 while five droplets ran).
 */
export async function busyPercent(ms = 500): Promise<number> {
  const before = cpuJiffies();
  await new Promise(resolve => setTimeout(resolve, ms));
  const after = cpuJiffies();
  return Math.round((100 * (after.busy - before.busy)) / Math.max(1, after.total - before.total));
}
