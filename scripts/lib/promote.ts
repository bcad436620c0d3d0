// all.ts --promote dev:prod: the images proven on dev go to prod, byte for byte (by digest),
// with a backup first and the previous images put back if prod fails its checks. One session
// (one SSH connection, one run lock) per host for the whole promotion, rollback included.
import { mkdirSync, writeFileSync, existsSync, renameSync } from 'node:fs';
import { join, relative } from 'node:path';
import { createInterface } from 'node:readline/promises';
import { chalk } from 'zx';
import type { Host, Inventory } from './inventory.ts';
import { isPinnedImage } from './inventory.ts';
import type { Args, RunInfo } from './play.ts';
import { EXIT, fail, loadHosts, localDir, makeReporter, sessionFor } from './play.ts';
import * as plays from './plays.ts';
import type { Fact, Step, StepResult } from './step.ts';
import { memoKey, STATE_DIR } from './step.ts';
import type { HostSession } from './session.ts';
import type { Reporter } from './report.ts';
import { ensureFile, fileFact } from './files.ts';
import { sh } from './shell.ts';
import { imagesFact } from './steps/up.ts';
import { CONTAINERS } from './steps/docker.ts';
import { BACKUP_MADE, backup, backupEstimateFact, formatBytes } from './steps/backup.ts';
import type { BackupMade } from './steps/backup.ts';
import { pinHostImages } from './inventory-pin.ts';
import { allChecks } from '../../checks/index.ts';

// ------------------------------------------------------------------------------ the runbook's steps

type StepsFor = (host: Host, run: RunInfo) => Step[];

/** all.ts's steps for a host: plays.allSteps (install, nginx and letsencrypt with domains, the firewall) once it exists. */
export const stepsForHost: StepsFor = ((plays as unknown as Record<string, unknown>).allSteps as StepsFor | undefined) ?? plays.installSteps;

export type Role = 'backend' | 'dashboard';
const ROLES: Role[] = ['backend', 'dashboard'];
const imageKey = (role: Role) => (role === 'backend' ? 'backend_image' : 'dashboard_image');

export interface RunningImage {
  container: string;
  id: string;
  status: string;
  startedAt: string;
  /** The reference the container was created from (compose's image:). */
  ref: string;
  imageId: string;
  /** repo@sha256:… names of that image, as the registry knows it. */
  repoDigests: string[];
  version: string;
  revision: string;
}

/** What each Convex container runs: its image reference, image ID, registry digests and labels. */
export const runningImagesFact: Fact<Partial<Record<Role, RunningImage>>> = {
  key: 'running-images',
  command: [
    sh`for c in ${Object.values(CONTAINERS)}; do`,
    `  line=$(docker inspect --format '{{.Id}}|{{.State.Status}}|{{.State.StartedAt}}|{{.Config.Image}}|{{.Image}}' "$c" 2>/dev/null) || continue`,
    `  printf '%s|%s|%s\\n' "$c" "$line" "$(docker image inspect --format '{{join .RepoDigests ","}}|{{index .Config.Labels "org.opencontainers.image.version"}}|{{index .Config.Labels "org.opencontainers.image.revision"}}' "\${line##*|}" 2>/dev/null)"`,
    'done',
  ].join('\n'),
  parse: out => {
    const images: Partial<Record<Role, RunningImage>> = {};
    for (const line of out.split('\n').filter(l => l.includes('|'))) {
      const [container, id, status, startedAt, ref, imageId, digests = '', version = '', revision = ''] = line.split('|') as string[];
      const role = (Object.entries(CONTAINERS).find(([, name]) => name === container)?.[0] ?? '') as Role;
      if (!role) continue;
      const label = (v: string) => (v === '<no value>' ? '' : v.trim());
      images[role] = { container: container!, id: id!, status: status!, startedAt: startedAt!, ref: ref!, imageId: imageId!, repoDigests: digests.split(',').filter(Boolean), version: label(version), revision: label(revision) };
    }
    return images;
  },
};

/** The repository of an image reference: without its tag and digest. */
export function repositoryOf(ref: string): string {
  const name = ref.split('@')[0]!;
  const slash = name.lastIndexOf('/');
  const colon = name.lastIndexOf(':');
  return colon > slash ? name.slice(0, colon) : name;
}

/** The repo@sha256 name of a running image in the repository it was pulled from. */
export function digestRefOf(image: RunningImage): string | undefined {
  const repo = repositoryOf(image.ref);
  const base = repo.split('/').pop()!;
  return image.repoDigests.find(d => repositoryOf(d) === repo) ?? image.repoDigests.find(d => repositoryOf(d).split('/').pop() === base);
}

function describe(image: RunningImage | undefined): string {
  if (!image) return 'nothing';
  const label = image.version || image.revision.slice(0, 12);
  return `${image.ref.split('/').pop()}${label ? ` (${label})` : ''}`;
}

const shortDigest = (ref: string) => ref.replace(/@sha256:([0-9a-f]{12})[0-9a-f]+$/, '@sha256:$1…').split('/').pop()!;

// ------------------------------------------------------------------------------ the promotion mark

/** Left on the target after a promotion, so that a stale inventory cannot silently undo it. */
export const PROMOTED_PATH = `${STATE_DIR}/promoted.json`;

interface PromotedMark {
  time: string;
  from: string;
  /** The references the host ran before the promotion, and the digests it runs since. */
  previous: Record<Role, string>;
  promoted: Record<Role, string>;
}

const promotedFact: Fact<PromotedMark | undefined> = {
  key: 'promoted-mark',
  command: sh`cat ${PROMOTED_PATH}`,
  parse: (out, code) => {
    if (code !== 0) return undefined;
    try {
      return JSON.parse(out) as PromotedMark;
    } catch {
      return undefined;
    }
  },
};

/**
 * Refuses a run that would put back the images a promotion replaced, while the host still runs
 * the promoted ones: what an inventory not updated after the promotion would do. The inventory
 * stays the source of truth — pin the promoted digests there, or pass --allow-rollback.
 */
export function promotionGuard(allowRollback: boolean): Step {
  return {
    name: 'promotion-guard',
    facts: () => [promotedFact, runningImagesFact],
    async run(ctx) {
      const mark = await ctx.fact(promotedFact);
      if (!mark) return 'no promotion to protect';
      const running = await ctx.fact(runningImagesFact);
      const undone = ROLES.filter(role => running[role]?.ref === mark.promoted[role] && ctx.host[imageKey(role)] === mark.previous[role] && mark.previous[role] !== mark.promoted[role]);
      if (undone.length === 0) return `the inventory does not undo the promotion from ${mark.from} at ${mark.time}`;
      const pins = ROLES.map(role => `${imageKey(role)} = "${mark.promoted[role]}"`).join(' and ');
      const message =
        `${ctx.host.name} runs what was promoted from ${mark.from} at ${mark.time.slice(0, 19)}Z, but the inventory pins what it ran before ` +
        `(${undone.map(r => mark.previous[r].split('/').pop()).join(', ')}): this run would roll the promotion back. ` +
        `Pin ${pins} in [hosts.${ctx.host.name}], or pass --allow-rollback to go back on purpose.`;
      if (allowRollback) {
        ctx.warn(message.replace(/ Pin .*$/, ' Going ahead: --allow-rollback.'));
        return 'rolling the promotion back on purpose (--allow-rollback)';
      }
      throw new Error(message + ' Nothing was changed.');
    },
  };
}

function markPromotedStep(mark: PromotedMark): Step {
  return {
    name: 'record-promotion',
    facts: () => [fileFact(PROMOTED_PATH)],
    async run(ctx) {
      await ensureFile(ctx, { path: PROMOTED_PATH, content: JSON.stringify(mark, null, 2) + '\n', mode: '644', label: PROMOTED_PATH });
      return `${PROMOTED_PATH} up to date`;
    },
  };
}

// ------------------------------------------------------------------------------ promotion steps

const BEFORE_MEMO = memoKey<Partial<Record<Role, RunningImage>>>('promotion-before');
const DIGESTS_MEMO = memoKey<{ digests: Record<Role, string>; running: Partial<Record<Role, RunningImage>> }>('promotion-digests');
const ROLLBACK_MEMO = memoKey<Record<Role, string>>('promotion-rollback');

/** Prod: both containers running, and room for the backup taken before anything changes. */
const preflightTarget: Step = {
  name: 'preflight',
  facts: host => [runningImagesFact, backupEstimateFact(host)],
  async run(ctx) {
    const running = await ctx.fact(runningImagesFact);
    const missing = ROLES.filter(role => !running[role]);
    if (missing.length) {
      throw new Error(`${missing.map(r => CONTAINERS[r]).join(' and ')} not found: ${ctx.host.name} is not installed. Run all.ts --host ${ctx.host.name} first; nothing was changed.`);
    }
    const estimate = await ctx.fact(backupEstimateFact(ctx.host));
    if (typeof estimate === 'string') throw new Error(`cannot estimate the size of a backup: ${estimate}`);
    if (estimate.free < estimate.need) {
      throw new Error(`not enough free disk for the backup taken before the promotion: ${formatBytes(estimate.free)} free on ${ctx.host.volume}, up to ${formatBytes(estimate.need)} needed. Free some space (old backups: [backup] keep); nothing was changed.`);
    }
    ctx.memo.set(BEFORE_MEMO, running);
    return `runs ${describe(running.backend)} and ${describe(running.dashboard)}; a backup needs up to ${formatBytes(estimate.need)}, ${formatBytes(estimate.free)} free`;
  },
};

/** Dev: reachable (the session's connect) and what it runs now, for the record. */
const preflightSource: Step = {
  name: 'preflight',
  facts: () => [runningImagesFact],
  async run(ctx) {
    const running = await ctx.fact(runningImagesFact);
    ctx.memo.set(BEFORE_MEMO, running);
    return running.backend ? `runs ${describe(running.backend)} and ${describe(running.dashboard)}` : 'no Convex containers yet';
  },
};

/** Dev after its checks: the exact digests its containers run, for prod to run the same bytes. */
const readDigests: Step = {
  name: 'read-digests',
  facts: () => [runningImagesFact],
  async run(ctx) {
    const running = await ctx.fact(runningImagesFact);
    const digests = {} as Record<Role, string>;
    for (const role of ROLES) {
      const image = running[role];
      const wanted = ctx.host[imageKey(role)];
      if (!image || image.ref !== wanted) throw new Error(`${CONTAINERS[role]} runs ${image?.ref ?? 'nothing'}, not the candidate ${wanted}`);
      const digest = digestRefOf(image);
      if (!digest) {
        throw new Error(`${image.ref} (${image.imageId}) has no registry digest on ${ctx.host.name}: only an image pulled from a registry can be promoted, so that prod pulls the very same one.`);
      }
      digests[role] = digest;
    }
    ctx.memo.set(DIGESTS_MEMO, { digests, running });
    return ROLES.map(role => `${shortDigest(digests[role])} (${running[role]!.version || running[role]!.revision.slice(0, 12) || 'no version label'})`).join(', ');
  },
};

/**
 * The references prod goes back to: what its containers ran before, as long as that reference
 * still names the same image on prod; else that image's digest.
 */
function rollbackTarget(target: Host, before: Partial<Record<Role, RunningImage>>): Step {
  const previous: Host = { ...target, backend_image: before.backend!.ref, dashboard_image: before.dashboard!.ref };
  return {
    name: 'rollback-target',
    facts: () => [imagesFact(previous)],
    async run(ctx) {
      const ids = await ctx.fact(imagesFact(previous));
      const refs = {} as Record<Role, string>;
      for (const role of ROLES) {
        const image = before[role]!;
        refs[role] = ids.get(image.ref) === image.imageId ? image.ref : (digestRefOf(image) ?? image.ref);
      }
      ctx.memo.set(ROLLBACK_MEMO, refs);
      return `back to ${refs.backend} and ${refs.dashboard}`;
    },
  };
}

// ------------------------------------------------------------------------------ the runbook

export type Outcome = 'promoted' | 'unchanged' | 'refused' | 'preflight-failed' | 'stopped-at-dev' | 'backup-failed' | 'rolled-back' | 'rollback-failed';

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
    from?: Record<Role, { ref: string; imageId: string; digest?: string; version: string }>;
    /** What dev ran after converging: the candidate's digests, pinned on prod. */
    to?: Record<Role, { ref: string; imageId: string; digest: string; version: string }>;
  };
  backup?: BackupMade;
  rollback?: Record<Role, string>;
  inventoryUpdate?: { updated: boolean; detail: string };
  stages: Array<{ stage: string; status: 'ok' | 'failed'; seconds: number; detail?: string }>;
  checks: Record<string, Array<{ check: string; status: string; detail: string }>>;
}

/** dev and prod from "--promote dev:prod" or "--promote prod" (prod's promote_from). */
export function promotionPair(inventory: Inventory, spec: string): { source: Host; target: Host } {
  const parts = spec.split(':');
  const known = `Known hosts: ${[...inventory.hosts.keys()].join(', ')}.`;
  const targetName = parts[parts.length - 1]!;
  const target = inventory.hosts.get(targetName);
  if (!target) fail(`--promote: "${targetName}" is not a host in ${inventory.path}. ${known}`);
  const sourceName = parts.length === 2 ? parts[0]! : target.promote_from;
  if (!sourceName) fail(`--promote ${targetName}: hosts.${targetName} has no promote_from. Add promote_from = "dev" to [hosts.${targetName}], or use --promote dev:${targetName}.`);
  const source = inventory.hosts.get(sourceName);
  if (!source) fail(`--promote: "${sourceName}" is not a host in ${inventory.path}. ${known}`);
  if (source.name === target.name) fail('--promote: a host cannot be promoted from itself.');
  if (source.address === target.address && source.port === target.port) fail(`--promote: ${source.name} and ${target.name} are the same droplet (${source.address}); promotion needs two.`);
  return { source, target };
}

export function candidateImages(source: Host, args: Args): Record<Role, string> {
  const candidate = { backend: String(args['backend-image'] ?? source.backend_image), dashboard: String(args['dashboard-image'] ?? source.dashboard_image) };
  for (const role of ROLES) {
    const ref = candidate[role];
    if (!isPinnedImage(ref)) {
      fail(`--${role}-image "${ref}" must name an image with a tag or digest, e.g. ghcr.io/get-convex/convex-${role}:<git sha>.`);
    }
  }
  return candidate;
}

async function confirm(question: string): Promise<boolean> {
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    return /^y(es)?$/i.test((await rl.question(`${question} [y/N] `)).trim());
  } finally {
    rl.close();
  }
}

function checkResults(results: StepResult[]): Array<{ check: string; status: string; detail: string }> {
  return results.filter(r => r.step.startsWith('check')).map(r => ({ check: r.step.replace(/^check /, ''), status: r.status, detail: r.detail }));
}

export async function promote(args: Args): Promise<number> {
  const spec = String(args.promote);
  if (!/^[^:,\s]+(:[^:,\s]+)?$/.test(spec)) fail(`--promote "${spec}": use --promote SOURCE:TARGET (e.g. dev:prod), or --promote TARGET when the target has promote_from.`);
  const { inventory } = loadHosts({ ...args, host: spec.split(':').pop() });
  const { source, target } = promotionPair(inventory, spec);
  // What can be checked before connecting (identity files, password variables), for both hosts.
  loadHosts({ ...args, host: `${source.name},${target.name}` });
  const candidate = candidateImages(source, args);
  if (args.check) fail('--promote has no dry run: the candidate must really run on dev before prod is touched. Use all.ts --host HOST --check to see what a run would change.');
  if (!args.yes && !process.stdin.isTTY) {
    fail(`--promote ${source.name}:${target.name} changes production, and this run is not interactive, so it cannot ask. Add --yes to go ahead without confirmation. Nothing was changed.`);
  }
  const script = 'all';
  const reporter = makeReporter(args, inventory, [source, target], script);
  const run: RunInfo = { args, local: (...parts) => localDir(inventory, ...parts) };
  const record: PromotionRecord = {
    time: new Date().toISOString(),
    from: source.name,
    to: target.name,
    inventory: inventory.path,
    candidate,
    versions: {},
    stages: [],
    checks: {},
  };
  const dev = sessionFor(source, args, reporter, script);
  const prod = sessionFor(target, args, reporter, script);
  const devCandidate: Host = { ...source, backend_image: candidate.backend, dashboard_image: candidate.dashboard };
  const allowRollback = Boolean(args['allow-rollback']);

  /** One numbered stage of the runbook: a header, the work, and what failed in it for the record. */
  const stage = async (label: string, title: string, work: () => Promise<boolean>): Promise<boolean> => {
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
      const failed = [...dev.results.slice(marks[0]).map(r => ({ host: source.name, r })), ...prod.results.slice(marks[1]).map(r => ({ host: target.name, r }))].filter(x => x.r.status === 'failed');
      detail = failed.map(({ host, r }) => `${host} ${r.step}: ${r.detail.split('\n')[0]}`).join('; ');
    }
    record.stages.push({ stage: `${label} ${title}`, status: ok ? 'ok' : 'failed', seconds: (Date.now() - started) / 1000, ...(detail ? { detail } : {}) });
    return ok;
  };
  const checksOf = async (session: HostSession, key: string, host: Host, afterFailure = false): Promise<boolean> => {
    const before = session.results.length;
    const ok = await session.checks(allChecks, { host, afterFailure });
    record.checks[key] = checkResults(session.results.slice(before));
    return ok;
  };
  const finish = (outcome: Outcome, summary: string): number => {
    record.outcome = outcome;
    record.summary = summary;
    return outcome === 'promoted' || outcome === 'unchanged' ? EXIT.ok : EXIT.failed;
  };

  let exit: number = EXIT.failed;
  try {
    exit = await (async (): Promise<number> => {
      // 1. Both hosts reachable and locked; prod installed, with room for a backup.
      const preflight = await stage('1', `preflight: ${source.name} and ${target.name}`, async () => {
        const [a, b] = await Promise.all([dev.open(), prod.open()]);
        if (!a || !b) return false;
        const [c, d] = await Promise.all([dev.run([preflightSource]), prod.run([preflightTarget])]);
        return c && d;
      });
      if (!preflight) return finish('preflight-failed', `preflight failed; nothing was changed on ${source.name} or ${target.name}`);
      const before = prod.memo.required(BEFORE_MEMO) as Record<Role, RunningImage>;
      record.versions.from = Object.fromEntries(ROLES.map(role => [role, { ref: before[role].ref, imageId: before[role].imageId, digest: digestRefOf(before[role]), version: before[role].version }])) as NonNullable<PromotionRecord['versions']['from']>;

      // 2–3. The candidate on dev, and dev's checks. Prod is not touched if either fails.
      const converged = await stage('2', `converge ${source.name} to ${candidate.backend} and ${candidate.dashboard}`, () =>
        dev.run([promotionGuard(allowRollback), ...stepsForHost(devCandidate, run)], { host: devCandidate }),
      );
      if (!converged) return finish('stopped-at-dev', `${source.name} could not run the candidate; ${target.name} was not touched`);
      const devChecked = await stage('3', `check ${source.name}`, () => checksOf(dev, source.name, devCandidate));
      if (!devChecked) return finish('stopped-at-dev', `the candidate failed its checks on ${source.name}; ${target.name} was not touched`);

      // 4. The exact digests dev runs.
      const read = await stage('4', `read the digests running on ${source.name}`, () => dev.run([readDigests], { host: devCandidate }));
      if (!read) return finish('stopped-at-dev', `cannot tell which digests ${source.name} runs; ${target.name} was not touched`);
      const { digests, running } = dev.memo.required(DIGESTS_MEMO) as { digests: Record<Role, string>; running: Record<Role, RunningImage> };
      record.versions.to = Object.fromEntries(ROLES.map(role => [role, { ref: running[role].ref, imageId: running[role].imageId, digest: digests[role], version: running[role].version }])) as NonNullable<PromotionRecord['versions']['to']>;
      if (ROLES.every(role => before[role].imageId === running[role].imageId)) {
        return finish('unchanged', `${target.name} already runs exactly the images ${source.name} runs; nothing to promote`);
      }
      if (!args.yes && !(await confirm(`Promote ${ROLES.map(r => shortDigest(digests[r])).join(' and ')} to ${target.name} (a backup is taken first)?`))) {
        return finish('refused', `not confirmed; ${target.name} was not touched`);
      }

      // 5. Back up prod.
      const backedUp = await stage('5', `back up ${target.name}`, () => prod.run([backup]));
      record.backup = prod.memo.get(BACKUP_MADE);
      if (!backedUp) return finish('backup-failed', `the backup of ${target.name} failed, so it was not changed`);

      // 6–7. Prod to dev's digests, then prod's checks.
      const pinned: Host = { ...target, backend_image: digests.backend, dashboard_image: digests.dashboard };
      let prodOk = await stage('6', `converge ${target.name} to ${source.name}'s digests`, () => prod.run(stepsForHost(pinned, run), { host: pinned }));
      if (prodOk) prodOk = await stage('7', `check ${target.name}`, () => checksOf(prod, target.name, pinned));
      if (prodOk) {
        await prod.run([markPromotedStep({ time: record.time, from: source.name, previous: { backend: before.backend.ref, dashboard: before.dashboard.ref }, promoted: digests })], { host: pinned });
        record.inventoryUpdate = updateInventory(args, inventory, target, digests, source, running);
        return finish('promoted', `${target.name} runs ${shortDigest(digests.backend)} and ${shortDigest(digests.dashboard)}, as ${source.name} does`);
      }

      // 7b. Roll prod back to the images it ran before; its data is left as it is.
      reporter.say(chalk.red(`\n${target.name} failed with ${source.name}'s images: rolling back to the images it ran before (its data is not restored).`));
      const rolledBack = await stage('7b', `roll ${target.name} back to ${describe(before.backend)} and ${describe(before.dashboard)}`, async () => {
        if (!(await prod.run([rollbackTarget(target, before)], { afterFailure: true }))) return false;
        const refs = prod.memo.required(ROLLBACK_MEMO);
        record.rollback = refs;
        const previous: Host = { ...target, backend_image: refs.backend, dashboard_image: refs.dashboard };
        return (await prod.run(stepsForHost(previous, run), { host: previous, afterFailure: true })) && (await checksOf(prod, `${target.name} after rollback`, previous, true));
      });
      const restoreHint = record.backup ? ` If its data must go back too: npx zx scripts/restore.ts --host ${target.name} --backup ${record.backup.id} --yes` : '';
      return rolledBack
        ? finish('rolled-back', `${target.name} failed with the candidate and was rolled back to ${describe(before.backend)}; its checks pass again.${restoreHint}`)
        : finish('rollback-failed', `${target.name} failed with the candidate AND after the rollback: it needs attention now. See the failures above.${restoreHint}`);
    })();
  } finally {
    record.finished = new Date().toISOString();
    const runs = [dev.close(), prod.close()];
    // 8. The record, beside the inventory; then the recap and the summary.
    const file = writeRecord(inventory, record);
    reporter.recap(runs, { script, promotion: record });
    summary(reporter, record, file, source, target);
  }
  return exit;
}

function updateInventory(args: Args, inventory: Inventory, target: Host, digests: Record<Role, string>, source: Host, running: Record<Role, RunningImage>): { updated: boolean; detail: string } {
  const version = running.backend.version ? ` (${running.backend.version})` : '';
  const comment = `# promoted from ${source.name}${version} on ${new Date().toISOString().slice(0, 19)}Z by all.ts --promote`;
  const images = { backend_image: digests.backend, dashboard_image: digests.dashboard };
  const lines = `[hosts.${target.name}]\nbackend_image = "${digests.backend}"\ndashboard_image = "${digests.dashboard}"`;
  if (args['keep-inventory']) return { updated: false, detail: `left as it is (--keep-inventory); pin in ${inventory.path}:\n${lines}` };
  const result = pinHostImages(inventory.path, target.name, images, comment);
  if (result.ok) return { updated: true, detail: `pinned ${target.name} to the promoted digests in ${inventory.path}:\n${result.diff}` };
  return { updated: false, detail: `could not edit ${inventory.path} (${result.reason}); pin these yourself:\n${result.lines}` };
}

function writeRecord(inventory: Inventory, record: PromotionRecord): string {
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

function summary(reporter: Reporter, record: PromotionRecord, file: string, source: Host, target: Host): void {
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
  if (record.rollback) reporter.say(`  rollback ${target.name} back to ${record.rollback.backend} and ${record.rollback.dashboard}; data not restored`);
  if (record.inventoryUpdate) {
    const [head, ...rest] = record.inventoryUpdate.detail.split('\n');
    reporter.say(`  ${record.inventoryUpdate.updated ? chalk.yellow('inventory') : chalk.red('inventory')} ${head}`);
    if (!record.inventoryUpdate.updated) for (const line of rest) reporter.say(`      ${line}`);
    reporter.say(
      record.inventoryUpdate.updated
        ? `           commit it: it is now the source of truth for ${target.name}.`
        : `           until then a plain all.ts --host ${target.name} refuses to roll the promotion back (see --allow-rollback).`,
    );
  }
  reporter.say(`  record   ${relative(process.cwd(), file) || file}`);
}
