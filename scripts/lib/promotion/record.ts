// What a promotion did, kept as JSON beside the inventory (.convex-ops/promotions/): the images
// before and after, the backup, each stage and every check, whatever the outcome.
import { mkdirSync, writeFileSync, existsSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import type { Host, Inventory } from '../inventory.ts';
import { localDir } from '../cli.ts';
import type { StepResult } from '../step.ts';
import type { BackupMade } from '../steps/backup.ts';
import type { Role, RoleImages } from '../steps/promotion.ts';
import type { MigrationLog } from '../steps/promotion-window.ts';

export type Outcome = 'promoted' | 'unchanged' | 'refused' | 'preflight-failed' | 'stopped-at-dev' | 'prepull-failed' | 'backup-failed' | 'rolled-back' | 'restored' | 'rollback-refused' | 'rollback-failed';

interface ImageVersion {
  ref: string;
  imageId: string;
  digest?: string;
  version: string;
}

export interface PromotionRecord {
  time: string;
  finished?: string;
  from: string;
  to: string;
  inventory: string;
  outcome?: Outcome;
  summary?: string;
  candidate: Record<Role, string>;
  versions: {
    /** What prod ran before: reference, image ID, digest, version label. */
    from?: Record<Role, ImageVersion>;
    /** What dev ran after converging: the candidate's digests, pinned on prod. */
    to?: Record<Role, ImageVersion & { digest: string }>;
  };
  backup?: BackupMade;
  /** Maintenance on to off on the target, by its clock: the time it answered clients only 503s. */
  window?: { seconds: number; backupSeconds?: number; startSeconds?: number };
  /** A rollback's own window, when the promotion's had closed before prod failed its checks. */
  rollbackWindow?: { seconds: number };
  /** What the candidate's backend logged about its database on prod (model::migrations). */
  migration?: MigrationLog;
  /** images: the previous images on the data as it is; restore: from the window's backup first. */
  rollback?: { kind: 'images' | 'restore'; images: Record<Role, string>; backup?: string };
  inventoryUpdate?: { updated: boolean; detail: string };
  stages: Array<{ stage: string; status: 'ok' | 'failed'; seconds: number; detail?: string }>;
  checks: Record<string, Array<{ check: string; status: string; detail: string }>>;
}

export function newRecord(inventory: Inventory, source: Host, target: Host, candidate: Record<Role, string>): PromotionRecord {
  return {
    time: new Date().toISOString(),
    from: source.name,
    to: target.name,
    inventory: inventory.path,
    candidate,
    versions: {},
    stages: [],
    checks: {},
  };
}

/** The record's account of two images: reference, image ID, the digest given for each, version label. */
export function versionsOf<D extends string | undefined>(images: RoleImages, digestOf: (role: Role) => D): Record<Role, ImageVersion & { digest: D }> {
  const entry = (role: Role) => ({ ref: images[role].ref, imageId: images[role].imageId, digest: digestOf(role), version: images[role].version });
  return { backend: entry('backend'), dashboard: entry('dashboard') };
}

/** The check results among a session's results, as the record keeps them. */
export function checkResults(results: StepResult[]): Array<{ check: string; status: string; detail: string }> {
  return results.filter(r => r.step.startsWith('check')).map(r => ({ check: r.step.replace(/^check /, ''), status: r.status, detail: r.detail }));
}

/** Writes the record atomically; returns its path. */
export function writeRecord(inventory: Inventory, record: PromotionRecord): string {
  const dir = localDir(inventory, '.convex-ops', 'promotions');
  mkdirSync(dir, { recursive: true });
  // The folder holds run records, never something to commit, wherever the inventory lives.
  const ignore = localDir(inventory, '.convex-ops', '.gitignore');
  if (!existsSync(ignore)) writeFileSync(ignore, '*\n');
  const file = join(dir, `${record.time.replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')}-${record.from}-${record.to}.json`);
  writeFileSync(`${file}.tmp`, JSON.stringify(record, null, 2) + '\n', { mode: 0o600 });
  renameSync(`${file}.tmp`, file);
  return file;
}
