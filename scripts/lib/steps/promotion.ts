// The steps of a promotion (all.ts --promote) and the fact they share: what each Convex container
// runs, down to its registry digest. promotionGuard also runs in every plain all.ts run, so that a
// stale inventory cannot silently undo a promotion.
import type { Host } from '../inventory.ts';
import type { Fact, Step } from '../step.ts';
import { STATE_DIR } from '../step.ts';
import { fileFact } from '../files.ts';
import { fileChanges, phase } from '../plan.ts';
import { lines, sh } from '../shell.ts';
import { imagesFact } from './up.ts';
import { CONTAINERS } from './docker.ts';
import { backupEstimateFact, formatBytes } from './backup.ts';
import { maintenanceProblem } from './maintenance.ts';
import { sitePath } from './nginx.ts';
import { openWindowProblem, windowRecordFact, windowRefusal } from './window-record.ts';

export type Role = 'backend' | 'dashboard';
export const ROLES: Role[] = ['backend', 'dashboard'];
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

/** The images of both Convex containers, once both are known to run. */
export type RoleImages = Record<Role, RunningImage>;

/** What each Convex container runs: its image reference, image ID, registry digests and labels. */
export const runningImagesFact: Fact<Partial<RoleImages>> = {
  key: 'running-images',
  command: lines(
    sh`for c in ${Object.values(CONTAINERS)}; do`,
    sh`  line=$(docker inspect --format '{{.Id}}|{{.State.Status}}|{{.State.StartedAt}}|{{.Config.Image}}|{{.Image}}' "$c" 2>/dev/null) || continue`,
    sh`  printf '%s|%s|%s\\n' "$c" "$line" "$(docker image inspect --format '{{join .RepoDigests ","}}|{{index .Config.Labels "org.opencontainers.image.version"}}|{{index .Config.Labels "org.opencontainers.image.revision"}}' "\${line##*|}" 2>/dev/null)"`,
    sh`done`,
  ),
  parse: out => {
    const images: Partial<RoleImages> = {};
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

/** An image as an operator knows it: its name and tag, and its version label when it has one. */
export function describeImage(image: RunningImage | undefined): string {
  if (!image) return 'nothing';
  const label = image.version || image.revision.slice(0, 12);
  return `${image.ref.split('/').pop()}${label ? ` (${label})` : ''}`;
}

/** The host as it would run these images instead of the inventory's. */
export function withImages(host: Host, images: Record<Role, string>): Host {
  return { ...host, backend_image: images.backend, dashboard_image: images.dashboard };
}

export const shortDigest = (ref: string) => ref.replace(/@sha256:([0-9a-f]{12})[0-9a-f]+$/, '@sha256:$1…').split('/').pop()!;

// ------------------------------------------------------------------------------ the promotion mark

/** Left on the target after a promotion, so that a stale inventory cannot silently undo it. */
export const PROMOTED_PATH = `${STATE_DIR}/promoted.json`;

export interface PromotedMark {
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
 * What a run with this host's images would undo of the promotion the mark records: the message
 * that refuses it, or nothing. An inventory not updated after a promotion would put back the
 * images it replaced while the host still runs the promoted ones.
 */
export function promotionUndone(mark: PromotedMark | undefined, running: Partial<RoleImages>, host: Host): string | undefined {
  if (!mark) return undefined;
  const undone = ROLES.filter(role => running[role]?.ref === mark.promoted[role] && host[imageKey(role)] === mark.previous[role] && mark.previous[role] !== mark.promoted[role]);
  if (undone.length === 0) return undefined;
  const pins = ROLES.map(role => `${imageKey(role)} = "${mark.promoted[role]}"`).join(' and ');
  return (
    `${host.name} runs what was promoted from ${mark.from} at ${mark.time.slice(0, 19)}Z, but the inventory pins what it ran before ` +
    `(${undone.map(r => mark.previous[r].split('/').pop()).join(', ')}): this run would roll the promotion back. ` +
    `Pin ${pins} in [hosts.${host.name}], or pass --allow-rollback to go back on purpose.`
  );
}

/**
 * Refuses a run that would roll a promotion back (promotionUndone). The inventory stays the
 * source of truth — pin the promoted digests there, or pass --allow-rollback.
 */
export function promotionGuard(allowRollback: boolean): Step {
  return {
    name: 'promotion-guard',
    phases: [
      phase({
        facts: () => ({ mark: promotedFact, running: runningImagesFact }),
        plan: ({ mark, running }, host) => {
          const undone = promotionUndone(mark, running, host);
          if (undone && !allowRollback) throw new Error(`${undone} Nothing was changed.`);
          return [];
        },
        warnings: ({ mark, running }, host) => {
          const undone = promotionUndone(mark, running, host);
          return undone ? [undone.replace(/ Pin .*$/, ' Going ahead: --allow-rollback.')] : [];
        },
        ok: ({ mark, running }, host) => {
          if (!mark) return 'no promotion to protect';
          if (promotionUndone(mark, running, host)) return 'rolling the promotion back on purpose (--allow-rollback)';
          return `the inventory does not undo the promotion from ${mark.from} at ${mark.time}`;
        },
      }),
    ],
  };
}

export function markPromoted(mark: PromotedMark): Step {
  return {
    name: 'record-promotion',
    phases: [
      phase({
        facts: () => ({ file: fileFact(PROMOTED_PATH) }),
        plan: ({ file }) => fileChanges(file, { path: PROMOTED_PATH, content: JSON.stringify(mark, null, 2) + '\n', mode: '644', label: PROMOTED_PATH }),
        ok: () => `${PROMOTED_PATH} up to date`,
      }),
    ],
  };
}

// ------------------------------------------------------------------------------ the runbook's steps
// Each refuses (throws) or changes nothing. What the runbook goes on with is derived, by the
// same functions, from the facts these steps read: it reads them with HostSession.fact().

/** Both Convex containers, or the refusal: the host is not installed. */
export function installedImages(running: Partial<RoleImages>, host: Host): RoleImages {
  const { backend, dashboard } = running;
  if (backend && dashboard) return { backend, dashboard };
  const missing = ROLES.filter(role => !running[role]);
  throw new Error(`${missing.map(r => CONTAINERS[r]).join(' and ')} not found: ${host.name} is not installed. Run all.ts --host ${host.name} first; nothing was changed.`);
}

/** Prod: both containers running, room for the backup taken before anything changes, and (with domains) an nginx site that knows maintenance mode. */
export const preflightTarget: Step = {
  name: 'preflight',
  phases: [
    phase({
      facts: (host: Host) => ({ running: runningImagesFact, estimate: backupEstimateFact(host), site: fileFact(sitePath(host)), window: windowRecordFact(host) }),
      plan: ({ running, estimate, site, window }, host) => {
        // Another window left open past its candidate's start: its backup, not a new one, holds the data from before it.
        const open = openWindowProblem(window, host, { finishing: false });
        if (open) throw new Error(windowRefusal(open));
        installedImages(running, host);
        // The window needs nginx's maintenance answer: refused now rather than half-way.
        const maintenance = maintenanceProblem(site, host);
        if (maintenance) throw new Error(maintenance);
        if (typeof estimate === 'string') throw new Error(`cannot estimate the size of a backup: ${estimate}`);
        if (estimate.free < estimate.need) {
          throw new Error(`not enough free disk for the backup taken before the promotion: ${formatBytes(estimate.free)} free on ${host.volume}, up to ${formatBytes(estimate.need)} needed. Free some space (old backups: [backup] keep); nothing was changed.`);
        }
        return [];
      },
      ok: ({ running, estimate }) => {
        const room = typeof estimate === 'string' ? '' : `; a backup needs up to ${formatBytes(estimate.need)}, ${formatBytes(estimate.free)} free`;
        return `runs ${describeImage(running.backend)} and ${describeImage(running.dashboard)}${room}`;
      },
    }),
  ],
};

/** Dev: reachable (the session's connect) and what it runs now, for the record. */
export const preflightSource: Step = {
  name: 'preflight',
  phases: [
    phase({
      facts: () => ({ running: runningImagesFact }),
      plan: () => [],
      ok: ({ running }) => (running.backend ? `runs ${describeImage(running.backend)} and ${describeImage(running.dashboard)}` : 'no Convex containers yet'),
    }),
  ],
};

/** The candidate as the source runs it, and its digests. */
export interface SourceDigests {
  digests: Record<Role, string>;
  running: RoleImages;
}

/** The exact digests dev runs the candidate (the host's images) by; or the refusal. */
export function sourceDigests(found: Partial<RoleImages>, host: Host): SourceDigests {
  const digests = {} as Record<Role, string>;
  const running = {} as RoleImages;
  for (const role of ROLES) {
    const image = found[role];
    const wanted = host[imageKey(role)];
    if (!image || image.ref !== wanted) throw new Error(`${CONTAINERS[role]} runs ${image?.ref ?? 'nothing'}, not the candidate ${wanted}`);
    const digest = digestRefOf(image);
    if (!digest) {
      throw new Error(`${image.ref} (${image.imageId}) has no registry digest on ${host.name}: only an image pulled from a registry can be promoted, so that prod pulls the very same one.`);
    }
    digests[role] = digest;
    running[role] = image;
  }
  return { digests, running };
}

/** Dev after its checks: the exact digests its containers run, for prod to run the same bytes. */
export const readDigests: Step = {
  name: 'read-digests',
  phases: [
    phase({
      facts: () => ({ found: runningImagesFact }),
      plan: ({ found }, host) => {
        sourceDigests(found, host);
        return [];
      },
      ok: ({ found }, host) => {
        const { digests, running } = sourceDigests(found, host);
        return ROLES.map(role => `${shortDigest(digests[role])} (${running[role].version || running[role].revision.slice(0, 12) || 'no version label'})`).join(', ');
      },
    }),
  ],
};

/** What prod knows of the images it ran before the promotion, under those references. */
export function previousImagesFact(target: Host, before: RoleImages): Fact<Map<string, string>> {
  return imagesFact(withImages(target, { backend: before.backend.ref, dashboard: before.dashboard.ref }));
}

/**
 * The references prod goes back to: what its containers ran before, as long as that reference
 * still names the same image on prod (`ids`, previousImagesFact); else that image's digest.
 */
export function rollbackRefs(ids: Map<string, string>, before: RoleImages): Record<Role, string> {
  const refs = {} as Record<Role, string>;
  for (const role of ROLES) {
    const image = before[role];
    refs[role] = ids.get(image.ref) === image.imageId ? image.ref : (digestRefOf(image) ?? image.ref);
  }
  return refs;
}

export function rollbackTarget(target: Host, before: RoleImages): Step {
  return {
    name: 'rollback-target',
    phases: [
      phase({
        facts: () => ({ ids: previousImagesFact(target, before) }),
        plan: () => [],
        ok: ({ ids }) => {
          const refs = rollbackRefs(ids, before);
          return `back to ${refs.backend} and ${refs.dashboard}`;
        },
      }),
    ],
  };
}
