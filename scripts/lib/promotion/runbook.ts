// all.ts --promote dev:prod: the images proven on dev go to prod, byte for byte (by digest),
// with a backup first and the previous images put back if prod fails its checks. One session
// (one SSH connection, one run lock) per host for the whole promotion, rollback included.
// Each numbered stage below is one function; runbook() is their order and what ends the run.
import { chalk } from 'zx';
import type { Host } from '../inventory.ts';
import type { Args, RunInfo } from '../cli.ts';
import { EXIT, localDir, makeReporter, sessionFor } from '../cli.ts';
import { allSteps } from '../runbooks.ts';
import type { HostSession } from '../session.ts';
import type { Reporter } from '../report.ts';
import { BACKUP_MADE, backup } from '../steps/backup.ts';
import type { Role, RoleImages, SourceDigests } from '../steps/promotion.ts';
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
  const { inventory, source, target, candidate } = promotionOptions(args);
  const script = 'all';
  const reporter = makeReporter(args, inventory, [source, target], script);
  const p: Promotion = {
    args,
    inventory,
    source,
    target,
    candidate,
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
  if (!(await backUpTarget(p))) return finish(p, 'backup-failed', `the backup of ${target.name} failed, so it was not changed`);
  if (await convergeAndCheckTarget(p, proven.digests)) return recordPromotion(p, before, proven);
  return rollBack(p, before);
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
    p.dev.run([promotionGuard(Boolean(p.args['allow-rollback'])), ...allSteps(devCandidate, p.run)], { host: devCandidate }),
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

/** 5. Back up prod. */
async function backUpTarget(p: Promotion): Promise<boolean> {
  const ok = await stage(p, '5', `back up ${p.target.name}`, () => p.prod.run([backup]));
  p.record.backup = p.prod.memo.get(BACKUP_MADE);
  return ok;
}

/** 6–7. Prod to dev's digests, then prod's checks. */
async function convergeAndCheckTarget(p: Promotion, digests: Record<Role, string>): Promise<boolean> {
  const { source, target } = p;
  const pinned = withImages(target, digests);
  const converged = await stage(p, '6', `converge ${target.name} to ${source.name}'s digests`, () => p.prod.run(allSteps(pinned, p.run), { host: pinned }));
  return converged && (await stage(p, '7', `check ${target.name}`, () => runChecks(p, p.prod, target.name, pinned)));
}

/** Prod passed: the mark on prod that guards the promotion, and the inventory pinned to it. */
async function recordPromotion(p: Promotion, before: RoleImages, { digests, running }: SourceDigests): Promise<number> {
  const { source, target, record } = p;
  const mark = { time: record.time, from: source.name, previous: { backend: before.backend.ref, dashboard: before.dashboard.ref }, promoted: digests };
  await p.prod.run([markPromoted(mark)], { host: withImages(target, digests) });
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

/** 7b. Roll prod back to the images it ran before; its data is left as it is. */
async function rollBack(p: Promotion, before: RoleImages): Promise<number> {
  const { source, target, prod, record } = p;
  p.reporter.say(chalk.red(`\n${target.name} failed with ${source.name}'s images: rolling back to the images it ran before (its data is not restored).`));
  const rolledBack = await stage(p, '7b', `roll ${target.name} back to ${describeImage(before.backend)} and ${describeImage(before.dashboard)}`, async () => {
    if (!(await prod.run([rollbackTarget(target, before)], { afterFailure: true }))) return false;
    const refs = rollbackRefs(await prod.fact(previousImagesFact(target, before)), before);
    record.rollback = refs;
    const previous = withImages(target, refs);
    return (await prod.run(allSteps(previous, p.run), { host: previous, afterFailure: true })) && (await runChecks(p, prod, `${target.name} after rollback`, previous, true));
  });
  const restoreHint = record.backup ? ` If its data must go back too: npx zx scripts/restore.ts --host ${target.name} --backup ${record.backup.id} --yes` : '';
  return rolledBack
    ? finish(p, 'rolled-back', `${target.name} failed with the candidate and was rolled back to ${describeImage(before.backend)}; its checks pass again.${restoreHint}`)
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
