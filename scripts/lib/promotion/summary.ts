// The few lines an operator reads at the end of a promotion: the outcome, what ran before and
// what runs now, what failed, the backup, the checks, the inventory and where the record is.
import { relative } from 'node:path';
import { chalk } from 'zx';
import type { Host } from '../inventory.ts';
import type { Reporter } from '../report.ts';
import { ROLES, shortDigest } from '../steps/promotion.ts';
import type { PromotionRecord } from './record.ts';

export function printSummary(reporter: Reporter, record: PromotionRecord, file: string, source: Host, target: Host): void {
  const good = record.outcome === 'promoted' || record.outcome === 'unchanged';
  const colour = good ? chalk.green : chalk.red;
  reporter.say(chalk.bold(`\nPROMOTION ${source.name} → ${target.name}: `) + colour(record.outcome ?? 'interrupted'));
  reporter.say(`  ${record.summary ?? 'the run stopped before it finished'}`);
  const from = record.versions.from;
  const to = record.versions.to;
  if (from) reporter.say(`  before   ${ROLES.map(r => `${from[r].ref.split('/').pop()}${from[r].version ? ` (${from[r].version})` : ''}`).join(', ')}`);
  const label = record.outcome === 'promoted' ? 'promoted' : 'candidate';
  if (to) reporter.say(`  ${label.padEnd(8)} ${ROLES.map(r => `${shortDigest(to[r].digest)}${to[r].version ? ` (${to[r].version})` : ''}`).join(', ')}`);
  else reporter.say(`  candidate ${ROLES.map(r => record.candidate[r].split('/').pop()).join(', ')}`);
  for (const failed of record.stages.filter(s => s.status === 'failed')) reporter.say(chalk.red(`  failed   ${failed.stage}: ${failed.detail ?? ''}`));
  if (record.backup) reporter.say(`  backup   ${record.backup.id} in ${record.backup.path}`);
  for (const [host, checks] of Object.entries(record.checks)) {
    const failed = checks.filter(c => c.status === 'failed');
    reporter.say(`  checks   ${host}: ${checks.length - failed.length}/${checks.length} ok${failed.length ? ` — failed: ${failed.map(c => `${c.check} (${c.detail.split('\n')[0]})`).join('; ')}` : ''}`);
  }
  if (record.window) reporter.say(`  window   ${describeWindow(target.name, record.window)}`);
  if (record.rollbackWindow) reporter.say(`  window   the rollback: ${describeWindow(target.name, record.rollbackWindow)}`);
  if (record.rollback) {
    const { images, kind, backup } = record.rollback;
    reporter.say(`  rollback ${target.name} back to ${images.backend} and ${images.dashboard}; ${kind === 'restore' ? `data restored from ${backup} (the candidate had migrated the database)` : 'data not restored (no migration)'}`);
  }
  if (record.inventoryUpdate) printInventoryUpdate(reporter, record.inventoryUpdate, target);
  reporter.say(`  record   ${relative(process.cwd(), file) || file}`);
}

/** "prod answered nothing for 2.3 s …": what clients of the target saw while it was switched. */
export function describeWindow(target: string, window: NonNullable<PromotionRecord['window']>): string {
  const parts = [
    ...(window.backupSeconds !== undefined ? [`the backup ${window.backupSeconds.toFixed(1)} s`] : []),
    ...(window.startSeconds !== undefined ? [`the candidate's start ${window.startSeconds.toFixed(1)} s`] : []),
  ];
  return `${target} answered nothing for ${window.seconds.toFixed(1)} s (clients got 503 with Retry-After${parts.length ? `; of it ${parts.join(', ')}` : ''})`;
}

function printInventoryUpdate(reporter: Reporter, update: NonNullable<PromotionRecord['inventoryUpdate']>, target: Host): void {
  const [head, ...rest] = update.detail.split('\n');
  reporter.say(`  ${update.updated ? chalk.yellow('inventory') : chalk.red('inventory')} ${head}`);
  if (!update.updated) for (const line of rest) reporter.say(`      ${line}`);
  reporter.say(
    update.updated
      ? `           commit it: it is now the source of truth for ${target.name}.`
      : `           until then a plain all.ts --host ${target.name} refuses to roll the promotion back (see --allow-rollback).`,
  );
}
