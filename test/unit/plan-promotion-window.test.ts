// A promotion's window as plans: maintenance on and off (and the pending handler that turns it
// off after a killed run), the pre-pull, the stop, the start, what the new backend's log says
// about migrations, and the rollback that follows from it. Facts in, changes out; no host.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Change } from '../../scripts/lib/plan.ts';
import { changeScript } from '../../scripts/lib/plan.ts';
import { HostMemo, SkipStep } from '../../scripts/lib/step.ts';
import { MAINTENANCE_OFF, MAINTENANCE_OFF_AT, MAINTENANCE_ON_AT, maintenanceFlag, planMaintenanceOff, planMaintenanceOn } from '../../scripts/lib/steps/maintenance.ts';
import { NGINX_RELOAD, planSite, renderSite } from '../../scripts/lib/steps/nginx.ts';
import type { SiteFacts } from '../../scripts/lib/steps/nginx.ts';
import { BACKEND_STOPPED_AT, BACKUP_SECONDS, parseMigrationLog, planPrePull, planRollback, planStartBackend, planStopBackend, planWindow } from '../../scripts/lib/steps/promotion-window.ts';
import { BACKUP_MADE, renderBackupScript } from '../../scripts/lib/steps/backup.ts';
import { renderCompose } from '../../scripts/lib/steps/compose.ts';
import { loadYaml } from '../../scripts/lib/yaml.ts';
import type { ContainerState, DockerState } from '../../scripts/lib/steps/docker.ts';
import { preflightTarget } from '../../scripts/lib/steps/promotion.ts';
import { describeWindow } from '../../scripts/lib/promotion/summary.ts';
import { absent, file, httpsHost, testHost } from './fixtures.ts';

const labels = (changes: Change[]) => changes.map(c => c.label);
const FLAG = '/var/lib/convex-ops/maintenance/swarm-dev';
const httpsSite = renderSite(httpsHost, { certificate: true, nginxVersion: '1.22.1', ipv6: false, ocsp: false });
const site = file(httpsSite);
const RECORD = '/var/lib/convex-ops/promotion-window/swarm-dev.json';
const WINDOW = {
  opened: '2026-12-02T10:00:00.000Z',
  from: 'dev',
  previous: { backend: 'r/convex-backend:1', dashboard: 'r/convex-dashboard:1' },
  candidate: { backend: `r/convex-backend@sha256:${'c'.repeat(64)}`, dashboard: `r/convex-dashboard@sha256:${'d'.repeat(64)}` },
};

test('maintenance on: one atomic switch (a rename), the off switch armed for the next run when a promotion turns it on', () => {
  assert.equal(maintenanceFlag(httpsHost), FLAG);
  const [on, ...rest] = planMaintenanceOn({ site, flag: 'absent', pending: [] }, httpsHost, { pending: true });
  assert.deepEqual(rest, []);
  assert.equal(on!.label, 'maintenance on (nginx answers api.example.test and site.example.test with 503 and Retry-After)');
  assert.equal(on!.arms, MAINTENANCE_OFF);
  const script = changeScript(on!)!;
  // The mark is written before the flag: a run killed in between still turns it off next time.
  assert.ok(script.indexOf(`touch /var/lib/convex-ops/pending/${MAINTENANCE_OFF}`) < script.indexOf(`mv -f ${FLAG}.new ${FLAG}`), script);
  const memo = new HostMemo();
  on!.after!('1764680000.250000000\n', memo);
  assert.equal(memo.get(MAINTENANCE_ON_AT), 1764680000.25);

  // An operator's switch is deliberate: nothing armed, so no later run turns it off.
  assert.equal(planMaintenanceOn({ site, flag: 'absent', pending: [] }, httpsHost, { pending: false })[0]!.arms, undefined);
  assert.deepEqual(planMaintenanceOn({ site, flag: 'file', pending: [] }, httpsHost, { pending: false }), []);
  assert.deepEqual(planMaintenanceOn({ site, flag: 'file', pending: [MAINTENANCE_OFF] }, httpsHost, { pending: true }), []);
  assert.equal(planMaintenanceOn({ site, flag: 'file', pending: [] }, httpsHost, { pending: true })[0]!.arms, MAINTENANCE_OFF, 'on by hand, then a promotion: its off switch is armed');
});

test('maintenance on is refused on a site that predates it, and skipped without domains', () => {
  assert.throws(() => planMaintenanceOn({ site: file('server {}\n'), flag: 'absent', pending: [] }, httpsHost, { pending: true }), /convex-swarm-dev\.conf does not know maintenance mode yet .* run all\.ts --host dev first; nothing was changed\./);
  assert.throws(() => planMaintenanceOn({ site: absent, flag: 'absent', pending: [] }, httpsHost, { pending: true }), /does not know maintenance mode/);
  assert.throws(() => planMaintenanceOn({ site: absent, flag: 'absent', pending: [] }, testHost, { pending: true }), (e: Error) => e instanceof SkipStep && /no \[domains\]/.test(e.message));
  const room = { need: 1, free: 2 };
  const v1 = { container: 'c', id: 'i', status: 'running', startedAt: '', ref: 'r', imageId: 'x', repoDigests: [], version: '', revision: '' };
  assert.throws(() => preflightTarget.phases[0]!.plan({ running: { backend: v1, dashboard: v1 }, estimate: room, site: file('server {}\n') } as never, httpsHost), /does not know maintenance mode yet/);
  assert.deepEqual(preflightTarget.phases[0]!.plan({ running: { backend: v1, dashboard: v1 }, estimate: room, site } as never, httpsHost), []);
});

test('maintenance off: the flag removed and a pending off switch cleared; nothing when it is off', () => {
  const [off] = planMaintenanceOff({ site, flag: 'file', pending: [MAINTENANCE_OFF] }, httpsHost);
  assert.equal(off!.label, 'maintenance off (nginx serves the backend again)');
  assert.equal(off!.clears, MAINTENANCE_OFF);
  assert.match(off!.script!, new RegExp(`^rm -f ${FLAG}\\ndate \\+%s\\.%N$`));
  const memo = new HostMemo();
  off!.after!('1764680002.5\n', memo);
  assert.equal(memo.get(MAINTENANCE_OFF_AT), 1764680002.5);
  assert.equal(labels(planMaintenanceOff({ site, flag: 'absent', pending: [MAINTENANCE_OFF] }, httpsHost)).length, 1, 'the mark alone is cleared too');
  assert.deepEqual(planMaintenanceOff({ site, flag: 'absent', pending: [] }, httpsHost), []);
});

test('the nginx step turns off the maintenance a killed promotion left on (its pending handler), and only then', () => {
  const converged: SiteFacts = { nginx: { version: '1.22.1', running: true, ipv6: false }, certificate: { present: true, usable: true, names: [], verified: false, ocsp: '' }, site, link: 'link:/etc/nginx/sites-available/convex-swarm-dev.conf', pending: [] };
  assert.deepEqual(planSite(converged, httpsHost), []);
  const changes = planSite({ ...converged, pending: [MAINTENANCE_OFF, NGINX_RELOAD] }, httpsHost);
  assert.deepEqual(labels(changes), ['reload nginx', 'maintenance off (nginx serves the backend again)']);
  assert.equal(changes[1]!.clears, MAINTENANCE_OFF);
  assert.ok(changes[1]!.after, 'the handler records when maintenance went off');
});

test('pre-pull: only the images not on the host, by digest, verified; nothing when both are there', () => {
  const pinned = { ...httpsHost, backend_image: `r/convex-backend@sha256:${'c'.repeat(64)}`, dashboard_image: `r/convex-dashboard@sha256:${'d'.repeat(64)}` };
  const images = new Map([[pinned.backend_image, ''], [pinned.dashboard_image, 'sha256:present']]);
  const [pull, ...rest] = planPrePull(images, pinned);
  assert.deepEqual(rest, []);
  assert.equal(pull!.label, `pull ${pinned.backend_image} (verified by digest; nothing is stopped)`);
  assert.match(pull!.script!, new RegExp(`pull ${pinned.backend_image.replace(/[@.]/g, '\\$&')}\\n`));
  assert.match(pull!.script!, /RepoDigests.*grep -qxF r\/convex-backend@sha256:c{64} \|\| fail/);
  assert.doesNotMatch(pull!.script!, /compose|stop|convex-dashboard@/);
  assert.deepEqual(planPrePull(new Map([[pinned.backend_image, 'a'], [pinned.dashboard_image, 'b']]), pinned), []);
});

test('stop and start: the backend alone stopped as compose would; the start waits on /version, not on Docker\'s 5 s health checks', () => {
  const docker = { compose: 'v1' } as DockerState;
  const running = new Map<string, ContainerState>([['convex-backend', { status: 'running' } as ContainerState]]);
  const [stop] = planStopBackend({ containers: running });
  assert.equal(stop!.script, 'docker stop --time 10 convex-backend >/dev/null || exit 1\ndate +%s.%N');
  const memo = new HostMemo();
  stop!.after!('1764680000.5\n', memo);
  assert.equal(memo.get(BACKEND_STOPPED_AT), 1764680000.5, 'the window of a host without domains starts here');
  assert.deepEqual(planStopBackend({ containers: new Map([['convex-backend', { status: 'exited' } as ContainerState]]) }), []);
  const [start] = planStartBackend({ docker }, httpsHost);
  assert.match(start!.script!, /must 'compose up backend' docker-compose up -d --no-deps backend\nwait_answering\ndate \+%s\.%N$/);
  assert.match(start!.script!, /code=\$\(curl -s -o "\$d\/version" -w '%\{http_code\}' --max-time 2 http:\/\/127\.0\.0\.1:3210\/version\)/);
  assert.match(start!.script!, /\[ \$\(\(now - failing_since\)\) -lt 10 \] \|\| fail "the backend answers \/version with HTTP \$code \(for 10 s\)/);
  assert.match(start!.script!, /sleep 0\.1/);
});

test('the window: one plan from a reading taken before it opens; the backup after the stop, the compose file before the start, maintenance off last', async () => {
  await loadYaml();
  const pinned = { ...httpsHost, backend_image: `r/convex-backend@sha256:${'c'.repeat(64)}`, dashboard_image: `r/convex-dashboard@sha256:${'d'.repeat(64)}` };
  const facts = {
    site, flag: 'absent' as const, pending: [],
    containers: new Map<string, ContainerState>([['convex-backend', { status: 'running' } as ContainerState]]),
    docker: { compose: 'v2' } as DockerState,
    backupScript: file(renderBackupScript(pinned), '755'),
    compose: file(renderCompose(httpsHost)),
  };
  const changes = planWindow(facts, pinned, WINDOW);
  assert.deepEqual(labels(changes), [
    `record the promotion window as open in ${RECORD} (convex-backend:1 → convex-backend@sha256:cccccccccccc…)`,
    'update docker-compose.yml',
    'maintenance on (nginx answers api.example.test and site.example.test with 503 and Retry-After)',
    'stop the backend, so that nothing writes during the backup',
    'make a backup in /opt/convex/backups/<id>, then keep the newest 3',
    `record in ${RECORD} that the candidate starts (from here on it may migrate the database)`,
    `start the backend on convex-backend@sha256:${'c'.repeat(64)} and wait until it answers`,
    'maintenance off (nginx serves the backend again)',
  ]);
  const [record, composeFile, on, , made, starts, , off] = changes;
  assert.equal(on!.arms, MAINTENANCE_OFF);
  assert.equal(off!.clears, MAINTENANCE_OFF);
  assert.match(composeFile!.stdin!, new RegExp(`image: r/convex-backend@sha256:c{64}`));
  // The record first, before anything stops, written atomically (a rename).
  assert.equal(record!.script, `mkdir -p -m 755 /var/lib/convex-ops/promotion-window || exit 1\nprintf '%s\\n' '${JSON.stringify({ ...WINDOW, stage: 'opened' })}' > ${RECORD}.new && mv -f ${RECORD}.new ${RECORD} || exit 1`);
  // The backup is timed on the droplet, its failure still fails the window, and its id goes into the record.
  assert.match(made!.script!, /^date \+%s\.%N\nmade=\$\( \/usr\/local\/sbin\/convex-ops-backup run\n\) \|\| exit \$\?\n/);
  assert.match(made!.script!, /\nprintf '%s%s%s\\n' '\{[^']*"stage":"backed-up","backup":\{"id":"' "\$id" '","quiesced":true\}\}' > \S+\.new && mv -f \S+\.new \S+ \|\| exit 1\ndate \+%s\.%N$/);
  assert.match(starts!.script!, /"stage":"candidate-started"/);
  const memo = new HostMemo();
  made!.after!('1764680000.5\nBACKUP 20261202T100000Z 8192\n1764680001.75\n', memo);
  assert.equal(memo.get(BACKUP_SECONDS), 1.25);
  assert.equal(memo.get(BACKUP_MADE)?.id, '20261202T100000Z');
  // Without domains there is no nginx to answer: the window is the stop to the start.
  const bare = { ...pinned, domains: undefined };
  assert.deepEqual(labels(planWindow({ ...facts, compose: file(renderCompose(bare)) }, bare, WINDOW)).map(l => l.split(' ')[0]), ['record', 'stop', 'make', 'record', 'start']);
  assert.deepEqual(labels(planWindow({ ...facts, compose: file(renderCompose(pinned)) }, pinned, WINDOW))[1], on!.label, 'a compose file already on the digests is left alone');
  // --no-backup-window: the backup was taken before, while prod served, and the record names it from the start; the window holds none.
  const served = { ...WINDOW, backup: { id: '20261202T090000Z', quiesced: false } };
  const early = planWindow(facts, pinned, served);
  assert.deepEqual(labels(early).map(l => l.split(' ')[0]), ['record', 'update', 'maintenance', 'stop', 'record', 'start', 'maintenance']);
  assert.ok(early[0]!.script!.includes(JSON.stringify({ ...served, stage: 'opened' })));
});

test('the migration log, in the real backend\'s words; the rollback it calls for', () => {
  const migrated = parseMigrationLog([
    '2026-12-02T10:00:00Z INFO Migrating to 2',
    "2026-12-02T10:00:00Z WARN Executing Migration 1/1. Wait for log line 'Migrated 2'",
    '2026-12-02T10:00:00Z INFO Migrated 2',
    '2026-12-02T10:00:00Z INFO db metadata version up to date at 2',
  ].join('\n'));
  assert.deepEqual(migrated, { migrated: [2], upToDateAt: 2 });
  assert.deepEqual(parseMigrationLog('INFO model::migrations: db metadata version up to date at 132\n'), { migrated: [], upToDateAt: 132 });
  assert.deepEqual(parseMigrationLog('WARN persisted db metadata version is ahead at 2, this binary is at 1\n'), { migrated: [], ahead: { persisted: 2, binary: 1 } });

  const restore = planRollback(migrated, '20261202T100000Z', { quiesced: true });
  assert.equal(restore.kind, 'restore');
  assert.match(restore.why, /migrated the database to version 2, .* restored from 20261202T100000Z, taken with the backend stopped just before the switch/);
  const images = planRollback({ migrated: [], upToDateAt: 1 }, '20261202T100000Z', { quiesced: true });
  assert.equal(images.kind, 'images');
  assert.match(images.why, /migrated nothing \(db metadata version up to date at 1\), so it goes back to the images it ran before; its data stays\./);
  // A log that cannot be read cannot rule a migration out: the backup is the safe way back.
  assert.equal(planRollback(undefined, '20261202T100000Z', { quiesced: true }).kind, 'restore');
  // --no-backup-window: a backup taken while serving may miss writes; across a migration, no rollback.
  const refused = planRollback(migrated, '20261202T100000Z', { quiesced: false });
  assert.equal(refused.kind, 'refused');
  assert.match(refused.why, /migrated the database to version 2, .* with --no-backup-window the backup 20261202T100000Z was taken while prod still served, so it may miss writes: the rollback is refused/);
  assert.equal(planRollback(undefined, '20261202T100000Z', { quiesced: false }).kind, 'refused');
  assert.equal(planRollback({ migrated: [], upToDateAt: 1 }, '20261202T100000Z', { quiesced: false }).kind, 'images');
});

test('the window as the summary prints it', () => {
  assert.equal(describeWindow('prod', { seconds: 2.34, backupSeconds: 0.81, startSeconds: 1.2 }), "prod answered nothing for 2.3 s (clients got 503 with Retry-After; of it the backup 0.8 s, the candidate's start 1.2 s)");
  assert.equal(describeWindow('prod', { seconds: 4 }), 'prod answered nothing for 4.0 s (clients got 503 with Retry-After)');
});
