// The promotion's steps as plans: the guard against a stale inventory, the mark, prod's and dev's
// preflight, the digests read on dev and the references prod rolls back to. Each refuses or
// changes nothing but the mark; the runbook goes on from the same facts. No host involved.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Step } from '../../scripts/lib/step.ts';
import type { PromotedMark, RoleImages, RunningImage } from '../../scripts/lib/steps/promotion.ts';
import {
  installedImages,
  markPromoted,
  preflightSource,
  preflightTarget,
  promotionGuard,
  readDigests,
  rollbackRefs,
  rollbackTarget,
  sourceDigests,
  withImages,
} from '../../scripts/lib/steps/promotion.ts';
import { absent, file, testHost } from './fixtures.ts';

const DIGEST = (c: string) => `sha256:${c.repeat(64)}`;
const image = (role: 'backend' | 'dashboard', tag: string, digest?: string): RunningImage => ({
  container: `convex-${role}`, id: `c-${role}`, status: 'running', startedAt: '2026-12-01T00:00:00Z', ref: `r/convex-${role}:${tag}`, imageId: `sha256:${role}-${tag}`,
  repoDigests: digest ? [`r/convex-${role}@${digest}`] : [], version: tag, revision: '',
});
const v1: RoleImages = { backend: image('backend', '1', DIGEST('a')), dashboard: image('dashboard', '1', DIGEST('b')) };
const v2: RoleImages = { backend: image('backend', '2', DIGEST('c')), dashboard: image('dashboard', '2', DIGEST('d')) };

/** A step's only phase, fed facts: its changes' labels, or its refusal as a thrown error. */
function planned(step: Step, facts: Record<string, unknown>, host = testHost) {
  const phase = step.phases![0]!;
  return {
    labels: () => phase.plan(facts as never, host).map(c => c.label),
    ok: () => phase.ok?.(facts as never, host),
    warnings: () => phase.warnings?.(facts as never, host) ?? [],
  };
}

const mark: PromotedMark = {
  time: '2026-12-01T12:00:00.000Z',
  from: 'dev',
  previous: { backend: 'r/convex-backend:1', dashboard: 'r/convex-dashboard:1' },
  promoted: { backend: `r/convex-backend@${DIGEST('c')}`, dashboard: `r/convex-dashboard@${DIGEST('d')}` },
};
const runsPromoted = { backend: { ...v2.backend, ref: mark.promoted.backend }, dashboard: { ...v2.dashboard, ref: mark.promoted.dashboard } };

test('guard: a stale inventory that would undo a promotion is refused, unless --allow-rollback', () => {
  // testHost pins r/convex-backend:1 and r/convex-dashboard:1: what the promotion replaced.
  const none = planned(promotionGuard(false), { mark: undefined, running: runsPromoted });
  assert.deepEqual(none.labels(), []);
  assert.equal(none.ok(), 'no promotion to protect');
  const stale = planned(promotionGuard(false), { mark, running: runsPromoted });
  assert.throws(stale.labels, /dev runs what was promoted from dev at 2026-12-01T12:00:00Z, but the inventory pins what it ran before \(convex-backend:1, convex-dashboard:1\): this run would roll the promotion back\. Pin backend_image = "r\/convex-backend@sha256:c+" and dashboard_image = .* or pass --allow-rollback to go back on purpose\. Nothing was changed\.$/);
  const allowed = planned(promotionGuard(true), { mark, running: runsPromoted });
  assert.deepEqual(allowed.labels(), []);
  assert.equal(allowed.ok(), 'rolling the promotion back on purpose (--allow-rollback)');
  assert.match(allowed.warnings()[0]!, /would roll the promotion back\. Going ahead: --allow-rollback\.$/);
  const pinned = planned(promotionGuard(false), { mark, running: runsPromoted }, withImages(testHost, mark.promoted));
  assert.deepEqual(pinned.labels(), []);
  assert.deepEqual(pinned.warnings(), []);
  assert.equal(pinned.ok(), 'the inventory does not undo the promotion from dev at 2026-12-01T12:00:00.000Z');
  // Already rolled back by hand: the host no longer runs the promoted images, nothing to undo.
  assert.deepEqual(planned(promotionGuard(false), { mark, running: v1 }).labels(), []);
});

test('the promotion mark is written once, then left alone', () => {
  const content = JSON.stringify(mark, null, 2) + '\n';
  assert.deepEqual(planned(markPromoted(mark), { file: absent }).labels(), ['create /var/lib/convex-ops/promoted.json']);
  assert.deepEqual(planned(markPromoted(mark), { file: file(content) }).labels(), []);
  assert.deepEqual(planned(markPromoted(mark), { file: file('{}\n') }).labels(), ['replace /var/lib/convex-ops/promoted.json (the original is kept aside)']);
});

test('preflight: prod must run both containers and have room for the backup; dev only reports', () => {
  const room = { need: 100 * 1024 * 1024, free: 2 * 1024 * 1024 * 1024 };
  const prod = planned(preflightTarget, { running: v1, estimate: room });
  assert.deepEqual(prod.labels(), []);
  assert.equal(prod.ok(), 'runs convex-backend:1 (1) and convex-dashboard:1 (1); a backup needs up to 100.0 MiB, 2.0 GiB free');
  assert.throws(planned(preflightTarget, { running: { backend: v1.backend }, estimate: room }).labels, /^Error: convex-dashboard not found: dev is not installed\. Run all\.ts --host dev first; nothing was changed\.$/);
  assert.throws(planned(preflightTarget, { running: {}, estimate: room }).labels, /convex-backend and convex-dashboard not found/);
  assert.throws(planned(preflightTarget, { running: v1, estimate: 'convex-ops-backup: error: cannot read the size of database convex' }).labels, /cannot estimate the size of a backup: convex-ops-backup: error: cannot read/);
  assert.throws(planned(preflightTarget, { running: v1, estimate: { need: room.free, free: room.need } }).labels, /not enough free disk for the backup taken before the promotion: 100\.0 MiB free on \/mnt\/v, up to 2\.0 GiB needed/);
  assert.deepEqual(installedImages(v1, testHost), v1);
  assert.equal(planned(preflightSource, { running: {} }).ok(), 'no Convex containers yet');
  assert.equal(planned(preflightSource, { running: v2 }).ok(), 'runs convex-backend:2 (2) and convex-dashboard:2 (2)');
});

test('read-digests: dev must run the candidate, pulled from a registry; its digests are what prod pins', () => {
  const candidate = withImages(testHost, { backend: 'r/convex-backend:2', dashboard: 'r/convex-dashboard:2' });
  const read = planned(readDigests, { found: v2 }, candidate);
  assert.deepEqual(read.labels(), []);
  assert.equal(read.ok(), 'convex-backend@sha256:cccccccccccc… (2), convex-dashboard@sha256:dddddddddddd… (2)');
  assert.deepEqual(sourceDigests(v2, candidate).digests, { backend: `r/convex-backend@${DIGEST('c')}`, dashboard: `r/convex-dashboard@${DIGEST('d')}` });
  assert.throws(planned(readDigests, { found: v1 }, candidate).labels, /^Error: convex-backend runs r\/convex-backend:1, not the candidate r\/convex-backend:2$/);
  const local = { ...v2, dashboard: image('dashboard', '2') };
  assert.throws(planned(readDigests, { found: local }, candidate).labels, /r\/convex-dashboard:2 \(sha256:dashboard-2\) has no registry digest on dev: only an image pulled from a registry can be promoted/);
});

test('rollback: back to the references prod ran, or their digests where a tag has moved', () => {
  const same = new Map([[v1.backend.ref, v1.backend.imageId], [v1.dashboard.ref, v1.dashboard.imageId]]);
  assert.deepEqual(rollbackRefs(same, v1), { backend: 'r/convex-backend:1', dashboard: 'r/convex-dashboard:1' });
  const moved = new Map([[v1.backend.ref, 'sha256:other'], [v1.dashboard.ref, v1.dashboard.imageId]]);
  assert.deepEqual(rollbackRefs(moved, v1), { backend: `r/convex-backend@${DIGEST('a')}`, dashboard: 'r/convex-dashboard:1' });
  const step = planned(rollbackTarget(testHost, v1), { ids: moved });
  assert.deepEqual(step.labels(), []);
  assert.equal(step.ok(), `back to r/convex-backend@${DIGEST('a')} and r/convex-dashboard:1`);
});
