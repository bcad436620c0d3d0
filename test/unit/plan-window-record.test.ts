// The record a promotion's window leaves on the target while it is open, and what follows from
// it: a run that would start the backend refuses once the candidate started (the database may
// be migrated), goes on when it had not; the inventory pinning the candidate finishes it;
// --rollback-window takes only the window's own backup and the images it replaced; doctor says so.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Phase } from '../../scripts/lib/plan.ts';
import type { Host } from '../../scripts/lib/inventory.ts';
import type { OpenWindow, WindowRecord } from '../../scripts/lib/steps/window-record.ts';
import { closeWindow, parseWindowRecord, rollbackWindowCheck, windowGuard, windowRecordFact } from '../../scripts/lib/steps/window-record.ts';
import { preflightTarget } from '../../scripts/lib/steps/promotion.ts';
import { rollbackSteps } from '../../scripts/lib/runbooks.ts';
import { engine } from '../../scripts/lib/doctor/engine.ts';
import type { DoctorState } from '../../scripts/lib/doctor/facts.ts';
import { file, httpsHost, testHost } from './fixtures.ts';

const RECORD = '/var/lib/convex-ops/promotion-window/swarm-dev.json';
const CANDIDATE = { backend: `r/convex-backend@sha256:${'c'.repeat(64)}`, dashboard: `r/convex-dashboard@sha256:${'d'.repeat(64)}` };
const started: OpenWindow = {
  opened: '2026-12-02T10:00:00.000Z',
  from: 'staging',
  previous: { backend: testHost.backend_image, dashboard: testHost.dashboard_image },
  candidate: CANDIDATE,
  stage: 'candidate-started',
  backup: { id: '20261202T100001Z', quiesced: true },
};
const pinnedToCandidate: Host = { ...testHost, backend_image: CANDIDATE.backend, dashboard_image: CANDIDATE.dashboard };

/** A one-phase step's plan and ok, on a record. */
function planOf(phase: Phase, record: WindowRecord, host: Host = testHost) {
  const facts = { record } as never;
  return { changes: () => phase.plan(facts, host), ok: () => phase.ok!(facts, host) };
}
const guard = (record: WindowRecord, host?: Host) => planOf(windowGuard.phases[0]!, record, host);

test('the record as read: absent, a window, or unreadable (which may hide an open window)', () => {
  const fact = windowRecordFact(testHost);
  assert.equal(fact.key, `promotion-window:${RECORD}`);
  assert.equal(fact.parse('', 3), undefined);
  assert.deepEqual(fact.parse(JSON.stringify(started), 0), started);
  assert.deepEqual(fact.parse('', 1), { unreadable: 'cat exited 1' });
  assert.match((parseWindowRecord('{"opened"') as { unreadable: string }).unreadable, /^not JSON: /);
  assert.deepEqual(parseWindowRecord(JSON.stringify({ ...started, stage: 'half' })), { unreadable: 'not a promotion window record' });
  assert.deepEqual(parseWindowRecord(JSON.stringify({ ...started, candidate: { backend: 'x' } })), { unreadable: 'not a promotion window record' });
});

test('guard: after the candidate started, a run that would put the previous images back refuses, naming both ways out', () => {
  const run = guard(started);
  assert.throws(
    run.changes,
    (e: Error) => {
      assert.match(e.message, /^a promotion's window is still open on dev \(\/var\/lib\/convex-ops\/promotion-window\/swarm-dev\.json\): the promotion from staging started at 2026-12-02T10:00:00Z ended \(killed or cut off\) after its candidate convex-backend@sha256:cccccccccccc… had started, so the database may be migrated to a version convex-backend:1 does not understand \(Convex has no downgrade\), and a run would start convex-backend:1 on it\. Nothing was changed\. /);
      assert.ok(e.message.includes(`Either finish the promotion: pin backend_image = "${CANDIDATE.backend}" and dashboard_image = "${CANDIDATE.dashboard}" in [hosts.dev], then run npx zx scripts/all.ts --host dev; `), e.message);
      assert.match(e.message, /or roll it back to what dev ran before, restoring the backup 20261202T100001Z the window took with the backend stopped \(anything written since is lost\): npx zx scripts\/all\.ts --host dev --rollback-window 20261202T100001Z --yes\.$/);
      return true;
    },
  );
  // The backup of --no-backup-window was taken while prod served: the way back says what it misses.
  assert.throws(guard({ ...started, backup: { id: '20261202T090000Z', quiesced: false } }).changes, /restoring the backup 20261202T090000Z, taken while it still served \(--no-backup-window\): writes made just before the window are not in it .*--rollback-window 20261202T090000Z --yes\.$/);
  assert.throws(guard({ ...started, backup: undefined }).changes, /roll it back by restoring a backup from before the window \(npx zx scripts\/restore\.ts --host dev --backup ID --yes\)\.$/);
  assert.throws(guard({ unreadable: 'not JSON: x' }).changes, /swarm-dev\.json cannot be read \(not JSON: x\), so a promotion's window may be open on dev .* Nothing was changed\. Look at it/);
});

test('guard: no window, or one killed before its candidate started, lets a run go on; pinning the candidate finishes it', () => {
  assert.deepEqual(guard(undefined).changes(), []);
  assert.equal(guard(undefined).ok(), 'no promotion window open');
  for (const stage of ['opened', 'backed-up'] as const) {
    const early = guard({ ...started, stage });
    assert.deepEqual(early.changes(), [], 'nothing migrated: the data is the previous images\' own');
    assert.equal(early.ok(), `a promotion window killed before its candidate started (${stage}): the data is still the previous images' own`);
  }
  const finishing = guard(started, pinnedToCandidate);
  assert.deepEqual(finishing.changes(), []);
  assert.equal(finishing.ok(), 'finishing the promotion window of 2026-12-02T10:00:00Z: the inventory pins its candidate');
  assert.throws(guard(started, { ...pinnedToCandidate, dashboard_image: testHost.dashboard_image }).changes, /still open/, 'both images, or it is not the candidate');
});

test('close: the record removed once the window or its rollback completed; nothing when there is none', () => {
  const close = (record: WindowRecord) => planOf(closeWindow('promoted').phases[0]!, record).changes();
  assert.deepEqual(close(undefined), []);
  const [change, ...rest] = close(started);
  assert.deepEqual(rest, []);
  assert.equal(change!.label, `close the promotion window (promoted): remove ${RECORD}`);
  assert.equal(change!.script, `rm -f ${RECORD}`);
  assert.equal(close({ unreadable: 'x' }).length, 1);
});

test('--rollback-window: only the open window\'s own backup, with the inventory on the images it replaced', () => {
  const check = (record: WindowRecord, host: Host = testHost, id = '20261202T100001Z') => planOf(rollbackWindowCheck(id).phases[0]!, record, host);
  assert.deepEqual(check(started).changes(), []);
  assert.equal(check(started).ok(), 'rolling back the promotion window of 2026-12-02T10:00:00Z (convex-backend@sha256:cccccccccccc… → convex-backend:1)');
  assert.throws(check(undefined).changes, /no promotion window is open on dev \(.*swarm-dev\.json does not exist\): there is nothing to roll back\. To restore a backup anyway: npx zx scripts\/restore\.ts --host dev --backup 20261202T100001Z --yes\. Nothing was changed\.$/);
  assert.throws(check(started, testHost, '20261201T000000Z').changes, /recorded the backup 20261202T100001Z, not 20261201T000000Z: --rollback-window takes the window's own backup\. Nothing was changed\.$/);
  assert.throws(check(started, pinnedToCandidate).changes, /the inventory pins convex-backend@sha256:cccccccccccc… and convex-dashboard@sha256:dddddddddddd… for dev, but the window replaced convex-backend:1 and convex-dashboard:1: pin backend_image = "r\/convex-backend:1" and dashboard_image = "r\/convex-dashboard:1" in \[hosts\.dev\]/);
  assert.throws(check({ unreadable: 'x' }).changes, /cannot be read/);
});

test('the rollback, a promotion\'s or --rollback-window\'s: behind maintenance, the compose file before the restore, the window closed last', () => {
  const run = { args: { _: [] }, local: () => '/tmp' };
  const names = (backup?: string) => rollbackSteps(httpsHost, run, backup).map(s => s.name);
  assert.deepEqual(names('20261202T100001Z'), ['maintenance', 'compose', 'restore', 'directories', 'docker', 'secret', 'postgres', 'compose', 'up', 'admin-key', 'nginx', 'letsencrypt', 'maintenance', 'promotion-window']);
  assert.deepEqual(names().slice(0, 2), ['maintenance', 'directories'], 'without a migration, the images alone');
});

test('a promotion\'s preflight refuses while another window is open past its candidate\'s start', () => {
  const v1 = { container: 'c', id: 'i', status: 'running', startedAt: '', ref: 'r', imageId: 'x', repoDigests: [], version: '', revision: '' };
  const facts = (window: WindowRecord) => ({ running: { backend: v1, dashboard: v1 }, estimate: { need: 1, free: 2 }, site: file(`/var/lib/convex-ops/maintenance/swarm-dev`), window }) as never;
  const plan = preflightTarget.phases[0]!.plan;
  assert.throws(() => plan(facts(started), httpsHost), /a promotion's window is still open on dev .* Nothing was changed\. Either finish the promotion/);
  // Not even when the inventory pins its candidate: a new window's backup would hold the migrated data.
  assert.throws(() => plan(facts(started), { ...httpsHost, ...pinnedToCandidate, domains: httpsHost.domains }), /still open/);
  assert.deepEqual(plan(facts({ ...started, stage: 'opened' }), httpsHost), []);
});

test('doctor: an open window is a problem with the ways out; one killed before its candidate started, a warning', () => {
  const state = (window?: WindowRecord) => ({ docker: { cli: true, running: true }, ...(window ? { window } : {}) }) as unknown as DoctorState;
  assert.deepEqual(engine(testHost, state()), []);
  const [open] = engine(testHost, state(started));
  assert.equal(open!.id, 'promotion-window-open');
  assert.equal(open!.severity, 'problem');
  assert.match(open!.cause, /window is still open on dev .* a run would start convex-backend:1 on it$/);
  assert.match(open!.fix, /^Either finish the promotion: .* --rollback-window 20261202T100001Z --yes\.$/);
  const [killed] = engine(testHost, state({ ...started, stage: 'backed-up' }));
  assert.equal(killed!.id, 'promotion-window-killed');
  assert.equal(killed!.severity, 'warning');
  assert.match(killed!.fix, /npx zx scripts\/all\.ts --host dev starts the images the inventory pins/);
});
