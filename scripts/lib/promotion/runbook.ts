// all.ts --promote dev:prod: the images proven on dev go to prod, byte for byte (by digest).
// Prod's window is as short as it can be and measured: the images are pulled before anything
// stops; then maintenance on (nginx answers 503 with Retry-After), the backend stopped, an exact
// backup, the candidate started and waited for, maintenance off. If prod fails, it goes back to
// the images it ran before; if the candidate's start migrated the database, from the backup too.
// One session (one SSH connection, one run lock) per host for the whole promotion, rollback
// included. Each numbered stage below is one function; runbook() is their order and what ends
// the run.
import { chalk } from 'zx';
import type { Host } from '../inventory.ts';
import type { Args, RunInfo } from '../cli.ts';
import { EXIT, localDir, makeReporter, sessionFor } from '../cli.ts';
import { allSteps, rollbackSteps } from '../runbooks.ts';
import type { HostSession } from '../session.ts';
import type { Reporter } from '../report.ts';
import { BACKUP_MADE, backup } from '../steps/backup.ts';
import { MAINTENANCE_OFF_AT, MAINTENANCE_ON_AT, maintenanceOff } from '../steps/maintenance.ts';
import type { WindowOpening } from '../steps/promotion-window.ts';
import { closeWindow, windowGuard } from '../steps/window-record.ts';
import { BACKEND_ANSWERED_AT, BACKEND_STOPPED_AT, BACKUP_SECONDS, migrationLogFact, planRollback, prePull, promotionWindow } from '../steps/promotion-window.ts';
import type { RoleImages, SourceDigests } from '../steps/promotion.ts';
import {
  describeImage,
  digestRefOf,
  installedImages,
  markPromoted,
  preflightSource,
  preflightTarget,
  previousImagesFact,
  promotionGuard,
  readDigests,
  ROLES,
  rollbackRefs,
  rollbackTarget,
  runningImagesFact,
  shortDigest,
  sourceDigests,
  withImages,
} from '../steps/promotion.ts';
import { allChecks } from '../../../checks/index.ts';
import { confirm, promotionOptions } from './options.ts';
import type { PromotionOptions } from './options.ts';
import type { Outcome, PromotionRecord } from './record.ts';
import { checkResults, newRecord, versionsOf, writeRecord } from './record.ts';
import { printSummary } from './summary.ts';
import { pinPromotedImages } from './inventory-pin.ts';

interface Promotion extends PromotionOptions {
  args: Args;
  reporter: Reporter;
  run: RunInfo;
  record: PromotionRecord;
  dev: HostSession;
  prod: HostSession;
}

export async function promote(args: Args): Promise<number> {
  const { inventory, source, target, candidate, backupWindow } = promotionOptions(args);
  const script = 'all';
  const reporter = makeReporter(args, inventory, [source, target], script);
  const p: Promotion = {
    args,
    inventory,
    source,
    target,
    candidate,
    backupWindow,
    reporter,
    run: { args, local: (...parts) => localDir(inventory, ...parts) },
    record: newRecord(inventory, source, target, candidate),
    dev: sessionFor(source, args, reporter, script),
    prod: sessionFor(target, args, reporter, script),
  };
  let exit: number = EXIT.failed;
  try {
    exit = await runbook(p);
  } finally {
    p.record.finished = new Date().toISOString();
    const runs = [p.dev.close(), p.prod.close()];
    // 8. The record, beside the inventory; then the recap and the summary.
    const file = writeRecord(inventory, p.record);
    reporter.recap(runs, { script, promotion: p.record });
    printSummary(reporter, p.record, file, source, target);
  }
  return exit;
}

async function runbook(p: Promotion): Promise<number> {
  const { source, target } = p;
  const before = await preflight(p);
  if (!before) return finish(p, 'preflight-failed', `preflight failed; nothing was changed on ${source.name} or ${target.name}`);
  const devCandidate = withImages(source, p.candidate);
  if (!(await convergeSource(p, devCandidate))) return finish(p, 'stopped-at-dev', `${source.name} could not run the candidate; ${target.name} was not touched`);
  if (!(await checkSource(p, devCandidate))) return finish(p, 'stopped-at-dev', `the candidate failed its checks on ${source.name}; ${target.name} was not touched`);
  const proven = await readSourceDigests(p, devCandidate);
  if (!proven) return finish(p, 'stopped-at-dev', `cannot tell which digests ${source.name} runs; ${target.name} was not touched`);
  if (ROLES.every(role => before[role].imageId === proven.running[role].imageId)) {
    return finish(p, 'unchanged', `${target.name} already runs exactly the images ${source.name} runs; nothing to promote`);
  }
  if (!p.args.yes && !(await confirm(`Promote ${ROLES.map(r => shortDigest(proven.digests[r])).join(' and ')} to ${target.name} (a backup is taken first)?`))) {
    return finish(p, 'refused', `not confirmed; ${target.name} was not touched`);
  }
  const pinned = withImages(target, proven.digests);
  if (!(await prePullTarget(p, pinned))) return finish(p, 'prepull-failed', `the candidate's images could not be pulled on ${target.name}; nothing was stopped there`);
  if (!p.backupWindow && !(await backUpWhileServing(p))) return finish(p, 'backup-failed', `the backup of ${target.name} failed, so it was not changed`);
  const switched = await openWindow(p, pinned, {
    opened: new Date().toISOString(),
    from: source.name,
    previous: { backend: before.backend.ref, dashboard: before.dashboard.ref },
    candidate: proven.digests,
    // --no-backup-window: the backup taken before the window is the one a rollback restores.
    ...(p.record.backup ? { backup: { id: p.record.backup.id, quiesced: false } } : {}),
  });
  // No backup: the window failed before the candidate was started.
  if (!p.record.backup) return resume(p, before);
  if (switched && (await convergeAndCheckTarget(p, pinned))) return recordPromotion(p, before, proven);
  return rollBack(p, before, p.record.backup.id);
}

/** 1. Both hosts reachable and locked; prod installed, with room for a backup. Returns what prod runs. */
async function preflight(p: Promotion): Promise<RoleImages | undefined> {
  const ok = await stage(p, '1', `preflight: ${p.source.name} and ${p.target.name}`, async () => {
    const [a, b] = await Promise.all([p.dev.open(), p.prod.open()]);
    if (!a || !b) return false;
    const [c, d] = await Promise.all([p.dev.run([preflightSource]), p.prod.run([preflightTarget])]);
    return c && d;
  });
  if (!ok) return undefined;
  // What preflight judged installed: its reading, typed (no second command).
  const before = installedImages(await p.prod.fact(runningImagesFact), p.target);
  p.record.versions.from = versionsOf(before, role => digestRefOf(before[role]));
  return before;
}

/** 2. The candidate on dev (through the same guard as any run). */
function convergeSource(p: Promotion, devCandidate: Host): Promise<boolean> {
  const { candidate } = p;
  return stage(p, '2', `converge ${p.source.name} to ${candidate.backend} and ${candidate.dashboard}`, () =>
    p.dev.run([windowGuard, promotionGuard(Boolean(p.args['allow-rollback'])), ...allSteps(devCandidate, p.run)], { host: devCandidate }),
  );
}

/** 3. Dev's checks, with the candidate. */
function checkSource(p: Promotion, devCandidate: Host): Promise<boolean> {
  return stage(p, '3', `check ${p.source.name}`, () => runChecks(p, p.dev, p.source.name, devCandidate));
}

/** 4. The exact digests dev runs. */
async function readSourceDigests(p: Promotion, devCandidate: Host): Promise<SourceDigests | undefined> {
  if (!(await stage(p, '4', `read the digests running on ${p.source.name}`, () => p.dev.run([readDigests], { host: devCandidate })))) return undefined;
  const proven = sourceDigests(await p.dev.fact(runningImagesFact), devCandidate);
  p.record.versions.to = versionsOf(proven.running, role => proven.digests[role]);
  return proven;
}

/** 5. The candidate's images on prod, verified by digest, while it still serves. */
function prePullTarget(p: Promotion, pinned: Host): Promise<boolean> {
  return stage(p, '5', `pull ${p.source.name}'s digests on ${p.target.name} (nothing stops)`, () => p.prod.run([prePull], { host: pinned }));
}

/** 6a. --no-backup-window: the backup taken before the window, while prod serves (a shorter window). */
async function backUpWhileServing(p: Promotion): Promise<boolean> {
  const ok = await stage(p, '6a', `back up ${p.target.name} while it serves (--no-backup-window)`, () => p.prod.run([backup]));
  p.record.backup = p.prod.memo.get(BACKUP_MADE);
  return ok;
}

/**
 * 6. The window, one step planned before it opens: maintenance on, the backend stopped, a backup
 * nothing can write past, the candidate's backend started and waited for, maintenance off.
 */
async function openWindow(p: Promotion, pinned: Host, window: WindowOpening): Promise<boolean> {
  const ok = await stage(p, '6', `the window on ${p.target.name}: maintenance on, backend stopped, backup, ${p.source.name}'s digests started, maintenance off`, () => p.prod.run([promotionWindow(window)], { host: pinned }));
  p.record.backup = p.prod.memo.get(BACKUP_MADE);
  measureWindow(p, 'window');
  return ok;
}

/** 7. Prod converged to dev's digests (the dashboard, the applied mark), then its checks. */
async function convergeAndCheckTarget(p: Promotion, pinned: Host): Promise<boolean> {
  const { source, target } = p;
  const converged = await stage(p, '7', `converge ${target.name} to ${source.name}'s digests`, () => p.prod.run(allSteps(pinned, p.run), { host: pinned }));
  return converged && (await stage(p, '7', `check ${target.name}`, () => runChecks(p, p.prod, target.name, pinned)));
}

/**
 * The time prod answered only 503s, by the droplet's clock: maintenance on to off, the
 * backup's share in it. The promotion's own window, or a rollback's when it needed one too.
 */
function measureWindow(p: Promotion, which: 'window' | 'rollbackWindow'): void {
  const { memo } = p.prod;
  // A host without domains has no maintenance switch: its window is the backend's stop to its answer.
  const on = memo.get(MAINTENANCE_ON_AT) ?? memo.get(BACKEND_STOPPED_AT);
  const off = memo.get(MAINTENANCE_OFF_AT) ?? memo.get(BACKEND_ANSWERED_AT);
  if (on === undefined || off === undefined || off < on) return;
  const tenths = (seconds: number) => Math.round(seconds * 10) / 10;
  if (which === 'rollbackWindow') {
    p.record.rollbackWindow = { seconds: tenths(off - on) };
    return;
  }
  // Its parts: the stop, the backup, and the candidate's start until it answered.
  const stopped = memo.get(BACKEND_STOPPED_AT);
  const backup = memo.get(BACKUP_SECONDS);
  const answered = memo.get(BACKEND_ANSWERED_AT);
  p.record.window = {
    seconds: tenths(off - on),
    ...(backup !== undefined ? { backupSeconds: tenths(backup) } : {}),
    ...(stopped !== undefined && backup !== undefined && answered !== undefined ? { startSeconds: tenths(answered - stopped - backup) } : {}),
  };
}

/** Prod passed: the mark on prod that guards the promotion, and the inventory pinned to it. */
async function recordPromotion(p: Promotion, before: RoleImages, { digests, running }: SourceDigests): Promise<number> {
  const { source, target, record } = p;
  const mark = { time: record.time, from: source.name, previous: { backend: before.backend.ref, dashboard: before.dashboard.ref }, promoted: digests };
  await p.prod.run([markPromoted(mark), closeWindow('promoted')], { host: withImages(target, digests) });
  record.inventoryUpdate = pinPromotedImages({
    path: p.inventory.path,
    hostName: target.name,
    images: { backend_image: digests.backend, dashboard_image: digests.dashboard },
    from: source.name,
    version: running.backend.version,
    keep: Boolean(p.args['keep-inventory']),
  });
  return finish(p, 'promoted', `${target.name} runs ${shortDigest(digests.backend)} and ${shortDigest(digests.dashboard)}, as ${source.name} does`);
}

/** The host with the images prod ran before the promotion, as prod still knows them (rollbackRefs). */
async function previousHost(p: Promotion, before: RoleImages): Promise<Host | undefined> {
  if (!(await p.prod.run([rollbackTarget(p.target, before)], { afterFailure: true }))) return undefined;
  return withImages(p.target, rollbackRefs(await p.prod.fact(previousImagesFact(p.target, before)), before));
}

/** 6b. The window failed before its backup was made (so before the candidate): prod started again as it was, and maintenance off. */
async function resume(p: Promotion, before: RoleImages): Promise<number> {
  const { target, prod } = p;
  const ok = await stage(p, '6b', `start ${target.name} again on ${describeImage(before.backend)}`, async () => {
    const previous = await previousHost(p, before);
    return previous !== undefined && (await prod.run([...allSteps(previous, p.run), maintenanceOff, closeWindow('it failed before its candidate started')], { host: previous, afterFailure: true }));
  });
  measureWindow(p, 'window');
  return ok
    ? finish(p, 'backup-failed', `the window on ${target.name} failed before its backup was made, so it was started again on the images it ran, unchanged`)
    : finish(p, 'rollback-failed', `the window on ${target.name} failed before its backup was made AND starting it again failed: it needs attention now. See the failures above.`);
}

/**
 * 7b. Prod back to what it ran before, behind maintenance: the images alone when the
 * candidate's start migrated nothing; else from the window's backup first (planRollback).
 */
async function rollBack(p: Promotion, before: RoleImages, backup: string): Promise<number> {
  const { source, target, prod, record } = p;
  const since = prod.memo.get(MAINTENANCE_ON_AT) ?? prod.memo.get(BACKEND_STOPPED_AT);
  // Unread, a migration cannot be ruled out: planRollback then restores.
  const migration = since === undefined ? undefined : await prod.fact(migrationLogFact(since)).catch(() => undefined);
  const plan = planRollback(migration, backup, { quiesced: p.backupWindow });
  if (migration) record.migration = migration;
  p.reporter.say(chalk.red(`\n${target.name} failed with ${source.name}'s images: ${plan.why.replace(/<host>/g, target.name)}`));
  const { kind } = plan;
  if (kind === 'refused') return finish(p, 'rollback-refused', `${target.name} failed with the candidate, which migrated its database; --no-backup-window: the rollback was refused (see above).`);
  const title = plan.kind === 'restore' ? `restore ${target.name} from ${plan.backup}, then start ${describeImage(before.backend)}` : `roll ${target.name} back to ${describeImage(before.backend)} and ${describeImage(before.dashboard)}`;
  const rolledBack = await stage(p, '7b', title, async () => {
    const previous = await previousHost(p, before);
    if (!previous) return false;
    record.rollback = { kind, images: { backend: previous.backend_image, dashboard: previous.dashboard_image }, ...(plan.kind === 'restore' ? { backup: plan.backup } : {}) };
    const steps = rollbackSteps(previous, p.run, plan.kind === 'restore' ? plan.backup : undefined);
    return (await prod.run(steps, { host: previous, afterFailure: true })) && (await runChecks(p, prod, `${target.name} after rollback`, previous, true));
  });
  measureWindow(p, record.window ? 'rollbackWindow' : 'window');
  const restoreHint = plan.kind === 'images' ? ` If its data must go back too: npx zx scripts/restore.ts --host ${target.name} --backup ${plan.backup} --yes` : '';
  const done = plan.kind === 'restore' ? `restored from ${plan.backup} (taken just before the switch) and started on ${describeImage(before.backend)}` : `rolled back to ${describeImage(before.backend)}`;
  return rolledBack
    ? finish(p, plan.kind === 'restore' ? 'restored' : 'rolled-back', `${target.name} failed with the candidate and was ${done}; its checks pass again.${restoreHint}`)
    : finish(p, 'rollback-failed', `${target.name} failed with the candidate AND after the rollback: it needs attention now. See the failures above.${restoreHint}`);
}

/** One numbered stage of the runbook: a header, the work, and what failed in it for the record. */
async function stage(p: Promotion, label: string, title: string, work: () => Promise<boolean>): Promise<boolean> {
  const { dev, prod, reporter } = p;
  reporter.say(chalk.bold(`\n── ${label}/8 ${title}`));
  const started = Date.now();
  const marks = [dev.results.length, prod.results.length];
  let ok: boolean;
  let detail: string | undefined;
  try {
    ok = await work();
  } catch (error) {
    ok = false;
    detail = (error as Error).message;
    reporter.warn(undefined, detail);
  }
  if (!ok && !detail) {
    const failed = [...dev.results.slice(marks[0]).map(r => ({ host: p.source.name, r })), ...prod.results.slice(marks[1]).map(r => ({ host: p.target.name, r }))].filter(x => x.r.status === 'failed');
    detail = failed.map(({ host, r }) => `${host} ${r.step}: ${r.detail.split('\n')[0]}`).join('; ');
  }
  p.record.stages.push({ stage: `${label} ${title}`, status: ok ? 'ok' : 'failed', seconds: (Date.now() - started) / 1000, ...(detail ? { detail } : {}) });
  return ok;
}

/** A host's checks, kept in the record under key. */
async function runChecks(p: Promotion, session: HostSession, key: string, host: Host, afterFailure = false): Promise<boolean> {
  const before = session.results.length;
  const ok = await session.checks(allChecks, { host, afterFailure });
  p.record.checks[key] = checkResults(session.results.slice(before));
  return ok;
}

/** The outcome and its one-line summary go into the record; the exit code follows from the outcome. */
function finish(p: Promotion, outcome: Outcome, summary: string): number {
  p.record.outcome = outcome;
  p.record.summary = summary;
  return outcome === 'promoted' || outcome === 'unchanged' ? EXIT.ok : EXIT.failed;
}
