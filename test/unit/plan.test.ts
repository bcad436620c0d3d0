// The plan machinery (plan.ts) and the simplest steps' plans: facts in, changes out.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { changeScript, fileChanges, packageChanges, withHandler } from '../../scripts/lib/plan.ts';
import type { Handler } from '../../scripts/lib/plan.ts';
import { sh } from '../../scripts/lib/shell.ts';
import type { Script } from '../../scripts/lib/shell.ts';
import { planDirectories } from '../../scripts/lib/steps/directories.ts';
import { compose, renderCompose } from '../../scripts/lib/steps/compose.ts';
import { MANAGED_MARKER } from '../../scripts/lib/files.ts';
import { absent, file, packages, testHost } from './fixtures.ts';

const labels = (changes: Array<{ label: string }>) => changes.map(c => c.label);

test('a file already as wanted plans nothing; other content, mode or owner each plan one change', () => {
  const want = { path: '/etc/x.conf', content: `# ${MANAGED_MARKER}\nx\n`, mode: '644', label: 'x.conf' };
  assert.deepEqual(fileChanges(file(want.content), want), []);
  assert.deepEqual(labels(fileChanges(absent, want)), ['create x.conf']);
  assert.deepEqual(labels(fileChanges(file(`# ${MANAGED_MARKER}\nold\n`), want)), ['update x.conf']);
  assert.deepEqual(labels(fileChanges(file('hand-written\n'), want)), ['replace x.conf (the original is kept aside)']);
  assert.deepEqual(labels(fileChanges(file(want.content, '600'), want)), ['set x.conf to mode 644 root:root']);
  assert.deepEqual(labels(fileChanges({ ...file(want.content), stale: ['/etc/.x.conf.convex-ops.abcdef'] }, want)), ['remove a temporary file of x.conf left by an interrupted run']);
  assert.throws(() => fileChanges({ kind: 'other', type: 'directory' }, want), /is a directory, not a regular file/);
});

test('a written file carries its content on stdin, its diff, and arms the handler it names', () => {
  const want = { path: '/etc/x.conf', content: 'new\n', mode: '644' };
  const [write] = fileChanges(file(`# ${MANAGED_MARKER}\nold\n`), want, 'x-reload');
  assert.equal(write!.stdin, 'new\n');
  assert.match(write!.diff!, /^-old$/m);
  assert.equal(write!.arms, 'x-reload');
  assert.equal(fileChanges(file('new\n', '600'), want, 'x-reload')[0]!.arms, undefined, 'a mode change needs no reload');
  const secret = fileChanges(absent, { ...want, content: 'KEY=hunter2\n', secret: true })[0]!;
  assert.doesNotMatch(secret.diff!, /hunter2/);
});

test('a handler runs after the changes that arm it, or when an earlier run left it pending', () => {
  const reload: Handler = { name: 'x-reload', label: 'reload x', script: sh`x reload` };
  assert.deepEqual(withHandler([], reload, []), []);
  assert.deepEqual(labels(withHandler([], reload, ['x-reload'])), ['reload x']);
  const armed = withHandler([{ label: 'update x.conf', script: sh`:`, arms: 'x-reload' }], reload, []);
  assert.deepEqual(labels(armed), ['update x.conf', 'reload x']);
  assert.match(changeScript(armed[0]!)!, /^mkdir -p \/var\/lib\/convex-ops\/pending && touch \/var\/lib\/convex-ops\/pending\/x-reload \|\| exit 1\n\(/);
  assert.match(changeScript(armed[1]!)!, /\nrc=\$\?\n\[ "\$rc" -ne 0 \] \|\| rm -f \/var\/lib\/convex-ops\/pending\/x-reload\nexit "\$rc"$/);
  assert.equal(changeScript({ label: 'local only' }), undefined);
});

test('packages: only what is missing is installed; an alternative already installed counts', () => {
  assert.deepEqual(packageChanges(packages('nginx'), ['nginx']), []);
  assert.deepEqual(labels(packageChanges(packages('curl'), ['nginx', 'curl', 'cron'])), ['install nginx, cron']);
  assert.deepEqual(packageChanges(packages('docker.io'), ['docker-cli|docker.io']), []);
  const [install] = packageChanges(packages(), ['docker-cli|docker.io']);
  assert.match(install!.script!, /for entry in 'docker-cli\|docker.io'; do/);
  assert.ok(install!.streams);
});

test('directories: the missing folders and the root link, or nothing; a volume that is not there is refused', () => {
  const dirs = ['dir', 'dir', 'dir', 'dir', 'dir'] as const;
  assert.deepEqual(planDirectories({ volume: 'dir', root: 'link:/mnt/v', folders: [...dirs] }, testHost), []);
  assert.deepEqual(labels(planDirectories({ volume: 'dir', root: 'absent', folders: ['dir', 'absent', 'dir', 'dir', 'absent'] }, testHost)), [
    'create /mnt/v/storage, /mnt/v/config',
    'link /opt/convex → /mnt/v',
  ]);
  assert.throws(() => planDirectories({ volume: 'absent', root: 'absent', folders: [...dirs] }, testHost), /the volume \/mnt\/v does not exist/);
  assert.throws(() => planDirectories({ volume: 'dir', root: 'dir', folders: [...dirs] }, testHost), /\/opt\/convex is a dir, not a symlink/);
});

test('compose: the rendered file once, then nothing', () => {
  const [phase] = compose.phases!;
  const content = renderCompose(testHost);
  assert.deepEqual(phase!.plan({ file: file(content) }, testHost), []);
  assert.deepEqual(labels(phase!.plan({ file: absent }, testHost)), ['create docker-compose.yml']);
});

test('a change script keeps set -e working and clears its handler only on success', async () => {
  const { spawnSync } = await import('node:child_process');
  const { mkdtempSync, existsSync, writeFileSync, mkdirSync } = await import('node:fs');
  const dir = mkdtempSync('/tmp/plan-test-');
  const run = (script: Script) => spawnSync('sh', ['-c', changeScript({ label: 'x', script, clears: 'h' })!.replaceAll('/var/lib/convex-ops', dir)]);
  mkdirSync(`${dir}/pending`);
  writeFileSync(`${dir}/pending/h`, '');
  const failed = run(sh`set -e\nfalse\necho reached`);
  assert.equal(failed.status, 1);
  assert.doesNotMatch(String(failed.stdout), /reached/, 'set -e stopped the script');
  assert.ok(existsSync(`${dir}/pending/h`), 'a failed handler stays pending');
  assert.equal(run(sh`true`).status, 0);
  assert.ok(!existsSync(`${dir}/pending/h`), 'a handler that succeeded is cleared');
});

test('a remote command is a Script: made by sh (values quoted), never from a plain string', () => {
  const name = 'x; rm -rf /';
  // @ts-expect-error a template string that skipped quoting is not a Script (npm run typecheck fails if it were)
  const unquoted: Script = `echo ${name}`;
  assert.equal(unquoted, 'echo x; rm -rf /');
  assert.equal(sh`echo ${name}`, "echo 'x; rm -rf /'");
  assert.equal(changeScript({ label: 'x', script: sh`echo ${name}` }), "( echo 'x; rm -rf /'\n)");
});
