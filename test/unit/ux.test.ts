// Operator experience, as data and as a child process's output (no host): colour only on a
// terminal, a line per step with host and duration, multi-host readability, the recap and the
// JSON agreeing, masked .env diffs, and the known_hosts rules beyond the basics.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { maskedEnvDiff } from '../../scripts/lib/files.ts';
import { fingerprint, knownKeysFor, verifyHostKey } from '../../scripts/lib/known-hosts.ts';

const dir = mkdtempSync(join(tmpdir(), 'ux-'));
const libUrl = new URL('../../scripts/lib/', import.meta.url).href;

/** Runs a tiny script against the Reporter in a child process, stdout/stderr piped (never a TTY). */
function reporterRun(body: string, env: Record<string, string | undefined> = {}): { stdout: string; stderr: string; log: string } {
  const logPath = join(mkdtempSync(join(dir, 'r-')), 'convex-ops.log');
  const script = `
    import { Reporter } from '${libUrl}report.ts';
    import { registerSecret } from '${libUrl}redact.ts';
    const logPath = ${JSON.stringify(logPath)};
    ${body}
  `;
  const childEnv: NodeJS.ProcessEnv = { ...process.env, ...env };
  for (const [k, v] of Object.entries(env)) if (v === undefined) delete childEnv[k];
  const result = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8', env: childEnv });
  assert.equal(result.status, 0, result.stderr);
  return { stdout: result.stdout, stderr: result.stderr, log: readFileSync(logPath, 'utf8') };
}

const steps = `
  const step = (step, status, detail = '', diffs = []) => ({ step, status, detail, changes: status === 'changed' ? [detail] : [], diffs, seconds: 0.25 });
  const runs = [
    { host: 'dev', steps: [step('connect', 'ok', 'root@10.0.0.1:22'), step('compose', 'changed', 'update docker-compose.yml', ['--- a\\n+++ b\\n@@ -1 +1 @@\\n-old\\n+new\\n'])], connections: 1, commands: 2, seconds: 1.5 },
    { host: 'production', steps: [step('connect', 'ok'), step('docker', 'failed', 'production: apt-get install failed (exit 100):\\nE: Unable to locate package docker.io\\nsecret hunter2-secret-value in stderr')], connections: 1, commands: 3, seconds: 2 },
  ];
`;

test('piped output is plain text: no colour codes, a line per step with status and duration, a recap', () => {
  const { stdout } = reporterRun(
    `${steps}
     registerSecret('hunter2-secret-value');
     const r = new Reporter({ json: false, showDiffs: true, logPath, hosts: ['dev', 'production'], script: 'install', argv: [] });
     for (const run of runs) for (const s of run.steps) r.stepFinished(run.host, s);
     r.recap(runs);`,
    { CI: undefined, NO_COLOR: undefined, FORCE_COLOR: undefined },
  );
  assert.doesNotMatch(stdout, /\x1b\[/, 'no ANSI escape codes when stdout is not a terminal');
  assert.match(stdout, /^dev +compose +changed 0\.25s {2}update docker-compose\.yml$/m);
  // Several hosts: every line of a multi-line failure and of a diff starts with its host.
  assert.match(stdout, /^production {2}docker +failed {2}0\.25s {2}production: apt-get install failed/m);
  assert.match(stdout, /^production {6}E: Unable to locate package docker\.io$/m);
  assert.match(stdout, /^dev +\| \+new$/m);
  assert.doesNotMatch(stdout, /\| $/m, 'no empty prefixed line after a diff');
  assert.match(stdout, /^RECAP$/m);
  assert.match(stdout, /^dev +ok=1 {2}changed=1 {2}failed=0 {2}skipped=0 {2}1\.5s/m);
  assert.match(stdout, /^production {2}ok=1 {2}changed=0 {2}failed=1 {2}skipped=0/m);
  assert.match(stdout, /^production {2}failed at docker: production: apt-get install failed \(exit 100\):$/m);
  assert.match(stdout, /^log: .*convex-ops\.log$/m);
  assert.doesNotMatch(stdout, /hunter2-secret-value/, 'registered secrets are masked');
  assert.match(stdout, /secret \*{8} in stderr/);
});

test('one host: diffs are printed as they are (a usable patch)', () => {
  const { stdout } = reporterRun(
    `${steps}
     const r = new Reporter({ json: false, showDiffs: true, logPath, hosts: ['dev'], script: 'install', argv: [] });
     r.stepFinished('dev', runs[0].steps[1]);`,
    { CI: undefined },
  );
  assert.match(stdout, /^-old\n\+new$/m);
});

test('FORCE_COLOR forces colour; CI and NO_COLOR keep it off', () => {
  const body = `${steps}
    const r = new Reporter({ json: false, showDiffs: false, logPath, hosts: ['dev'], script: 'install', argv: [] });
    r.stepFinished('dev', runs[0].steps[0]);`;
  assert.match(reporterRun(body, { FORCE_COLOR: '1', CI: undefined, NO_COLOR: undefined }).stdout, /\x1b\[/);
  assert.doesNotMatch(reporterRun(body, { FORCE_COLOR: undefined, CI: 'true' }).stdout, /\x1b\[/);
  // The log never holds colour codes, whatever the terminal.
  assert.doesNotMatch(reporterRun(body, { FORCE_COLOR: '1' }).log, /\x1b\[/);
});

test('--json: stdout is one JSON document whose recap agrees with the human recap on stderr; both are logged, redacted', () => {
  const { stdout, stderr, log } = reporterRun(
    `${steps}
     registerSecret('hunter2-secret-value');
     const r = new Reporter({ json: true, showDiffs: false, logPath, hosts: ['dev', 'production'], script: 'install', argv: ['--json'] });
     for (const run of runs) for (const s of run.steps) r.stepFinished(run.host, s);
     r.recap(runs, { script: 'install', check: false, exit: 1 });`,
  );
  const doc = JSON.parse(stdout) as { exit: number; recap: Record<string, Record<string, number>>; hosts: Array<{ host: string; steps: Array<{ step: string; status: string }>; recap: Record<string, number> }>; log: string };
  assert.equal(doc.exit, 1);
  for (const host of doc.hosts) {
    const counted = Object.fromEntries(['ok', 'changed', 'failed', 'skipped'].map(s => [s, host.steps.filter(x => x.status === s).length]));
    assert.deepEqual(host.recap, counted);
    assert.deepEqual(doc.recap[host.host], counted);
    const line = new RegExp(`^${host.host} +ok=${counted.ok} +changed=${counted.changed} +failed=${counted.failed} +skipped=${counted.skipped} `, 'm');
    assert.match(stderr, line, 'the human recap (on stderr under --json) says the same');
  }
  assert.doesNotMatch(stdout + stderr + log, /hunter2-secret-value/);
  assert.ok(log.includes('"recap"') && log.includes('RECAP'), 'the log holds the run, the recap and the JSON');
});

test('long work shows its newest output every few seconds, and a quiet step that it is still working', () => {
  const { stdout } = reporterRun(
    `const { ManualClock } = await import('${new URL('./manual-clock.ts', import.meta.url).href}');
     const clock = new ManualClock();
     const r = new Reporter({ json: false, showDiffs: false, logPath, hosts: ['dev'], script: 'install', argv: [], clock });
     r.stepStarted('dev', 'up');
     r.progress('dev', 'up', 'Pulling fs layer\\n\\n');
     r.progress('dev', 'up', 'Extracting 42%');
     clock.advance(20_500);
     r.stepFinished('dev', { step: 'up', status: 'ok', detail: '', changes: [], diffs: [], seconds: 20.5 });
     clock.advance(11_000);`,
  );
  assert.match(stdout, /^dev +… up: Pulling fs layer \(0s\)$/m, 'progress shows the last line that has text, at once');
  assert.match(stdout, /^dev +… up: Extracting 42% \(10s\)$/m, 'a line that came too soon is shown on the next tick');
  assert.match(stdout, /^dev +… up: still working \(20s\)$/m, 'nothing new: a sign of life with the elapsed time');
  assert.equal(stdout.match(/still working/g)?.length, 1, 'the timer stops when the step finishes');
});

test('.env diffs show keys, never values', () => {
  const before = '# Managed by convex-ops\nINSTANCE_SECRET=aaaaaaaaaaaa\nPOSTGRES_URL=postgresql://convex:oldpass@host.docker.internal:5432/db\n';
  const after = '# Managed by convex-ops\nINSTANCE_SECRET=aaaaaaaaaaaa\nPOSTGRES_URL=postgresql://convex:newpass@host.docker.internal:5432?sslmode=disable\nCONVEX_ADMIN_KEY=convex-self-hosted|0123\n';
  const diff = maskedEnvDiff('/opt/convex/.env', before, after);
  for (const secret of ['aaaaaaaaaaaa', 'oldpass', 'newpass', '0123', 'sslmode']) assert.ok(!diff.includes(secret), secret);
  assert.match(diff, /^-POSTGRES_URL=\*{8}$/m);
  assert.match(diff, /^\+POSTGRES_URL=\*{8} \(changed\)$/m);
  assert.match(diff, /^\+CONVEX_ADMIN_KEY=\*{8}$/m);
  assert.match(diff, /^ INSTANCE_SECRET=\*{8}$/m, 'an unchanged key is context, not a change');
});

function ed25519Blob(): Buffer {
  const raw = generateKeyPairSync('ed25519').publicKey.export({ format: 'der', type: 'spki' }).subarray(-32);
  const withLength = (b: Buffer) => Buffer.concat([Buffer.from([0, 0, 0, b.length]), b]);
  return Buffer.concat([withLength(Buffer.from('ssh-ed25519')), withLength(raw)]);
}

test('known_hosts: negated patterns exclude a host; @revoked keys are refused; @cert-authority lines are not host keys', () => {
  const key = ed25519Blob();
  const revoked = ed25519Blob();
  const file = join(dir, 'known_hosts');
  const entry = (hosts: string, blob: Buffer, marker = '') => `${marker ? marker + ' ' : ''}${hosts} ssh-ed25519 ${blob.toString('base64')}`;
  writeFileSync(file, [entry('10.0.0.*,!10.0.0.66', key), entry('10.0.0.7', revoked, '@revoked'), entry('10.0.0.7', revoked), entry('*', ed25519Blob(), '@cert-authority')].join('\n') + '\n');
  assert.equal(knownKeysFor(file, '10.0.0.5', 22).length, 1);
  assert.equal(knownKeysFor(file, '10.0.0.66', 22).length, 0, 'the negated pattern wins');
  assert.throws(
    () => verifyHostKey({ file, host: 'dev', address: '10.0.0.7', port: 22, acceptNew: true, presented: revoked }),
    (e: Error) => /REVOKED host key for dev/.test(e.message) && e.message.includes(fingerprint(revoked)),
  );
  verifyHostKey({ file, host: 'dev', address: '10.0.0.5', port: 22, acceptNew: false, presented: key });
});
