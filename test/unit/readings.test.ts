// How a run reads state in few remote commands (issue 8): checks that share a probe share its
// reading, readings taken with the state are judged without asking again, and PostgreSQL's
// configuration files are read with the cluster although their path holds its version. The
// "host" here is a local sh, so each command really runs; nothing is mocked but the transport.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Host } from '../../scripts/lib/inventory.ts';
import type { Connection, RunResult } from '../../scripts/lib/ssh.ts';
import type { Check } from '../../scripts/lib/check.ts';
import { sh } from '../../scripts/lib/shell.ts';
import type { Script } from '../../scripts/lib/shell.ts';
import { probeFacts, runChecks } from '../../scripts/lib/check.ts';
import { gatherFacts, Readings } from '../../scripts/lib/step.ts';
import { newestClusterFile } from '../../scripts/lib/steps/postgres.ts';
import { backendConnected, noErrors } from '../../checks/backend-logs.ts';
import { DEMUX } from '../../checks/backend-probe.ts';
import { backendHealthy } from '../../checks/backend-healthy.ts';
import { dashboardAnswers } from '../../checks/dashboard.ts';
import { imagesPinned } from '../../checks/images-pinned.ts';

const host = { name: 'local' } as Host;

/** A Connection whose commands run in a local sh, rewritten by `edit` first. */
function localConnection(edit: (script: string) => string = s => s): Connection & { scripts: string[] } {
  const scripts: string[] = [];
  const conn = {
    host,
    commands: 0,
    scripts,
    async run(script: string): Promise<RunResult> {
      conn.commands++;
      scripts.push(script);
      const stdout = execFileSync('sh', ['-c', edit(script)], { encoding: 'utf8' });
      return { code: 0, stdout, stderr: '' };
    },
  };
  return conn as unknown as Connection & { scripts: string[] };
}

const check = (name: string, probe: Script, verdict: (out: string) => string | undefined): Check => ({ name, probe: () => probe, verdict });

test('checks with the same probe run it once, and each judges its output', async () => {
  const conn = localConnection();
  const counter = join(mkdtempSync(join(tmpdir(), 'cxo-probe-')), 'runs');
  const shared = sh`echo x >> ${counter}; echo 'connected 1'; echo 'error boom'`;
  const results = await runChecks(conn, [
    check('a', shared, out => (out.includes('connected 1') ? undefined : 'not connected')),
    check('b', shared, out => (out.includes('error ') ? 'errors' : undefined)),
    check('c', sh`echo other`, () => undefined),
  ]);
  assert.equal(conn.commands, 1);
  assert.equal(execFileSync('cat', [counter], { encoding: 'utf8' }), 'x\n', 'the shared probe ran once');
  assert.deepEqual(results.map(r => [r.step, r.status, r.detail]), [['check a', 'ok', ''], ['check b', 'failed', 'errors'], ['check c', 'ok', '']]);
});

test('readings taken earlier (with the state) are judged without another command', async () => {
  const checks = [check('a', sh`echo fine`, out => (out.trim() === 'fine' ? undefined : 'bad'))];
  const readings = new Readings();
  await gatherFacts(localConnection(), probeFacts(checks, host), readings);
  const conn = localConnection();
  const results = await runChecks(conn, checks, host, readings);
  assert.equal(conn.commands, 0);
  assert.equal(results[0]!.status, 'ok');
});

test('the backend checks share one reading, and each judges its part', () => {
  const pinned = { ...host, backend_image: 'r/convex-backend:1', dashboard_image: 'r/convex-dashboard:1' };
  const shared = [backendHealthy, dashboardAnswers, backendConnected, noErrors, imagesPinned];
  assert.equal(new Set(shared.map(c => c.probe(pinned))).size, 1);
  const doc = (d: object) => `${JSON.stringify(d)}\n\n@@convex-ops-docker-api 200\n`;
  const engine =
    doc({ Name: '/convex-backend', Image: 'sha256:b', Config: { Image: 'r/convex-backend:1' }, State: { Status: 'running', StartedAt: 'T', Health: { Status: 'healthy' } } }) +
    doc({ Name: '/convex-dashboard', Image: 'sha256:d', Config: { Image: 'r/convex-dashboard:1' }, State: { Status: 'running' } }) +
    doc({ Id: 'sha256:b' }) +
    doc({ Id: 'sha256:old' });
  const out = `${engine}http http://127.0.0.1:3210/version 200\nhttp http://127.0.0.1:6791/ 000\nerror 2024 ERROR something broke\nconnected 1\n`;
  assert.equal(backendHealthy.verdict(out, 0, pinned), undefined);
  assert.match(dashboardAnswers.verdict(out, 0, pinned) ?? '', /answered nothing on port 6791/);
  assert.equal(backendConnected.verdict(out, 0, pinned), undefined);
  assert.match(noErrors.verdict(out, 0, pinned) ?? '', /something broke/);
  assert.match(imagesPinned.verdict(out, 0, pinned) ?? '', /convex-dashboard runs an image other than/);
  assert.match(backendConnected.verdict('connected 0\n', 0, pinned) ?? '', /has not logged/);
  assert.match(backendHealthy.verdict('', 0, pinned) ?? '', /missing container/);
});

test('the log probe finds the lines the checks look for', () => {
  // The probe's awk program, fed a log instead of `docker logs`.
  const probe = backendConnected.probe(host);
  const awk = probe.slice(probe.indexOf('| awk ') + 2);
  const log = ['INFO starting', 'INFO Connected to Postgres database', 'ERRORS are fine', 'x ERROR: one', 'ERROR two', 'y [ERROR] three', 'ERROR four'].join('\n');
  const out = execFileSync('sh', ['-c', `printf '%s\\n' "$LOG" | ${awk}`], { encoding: 'utf8', env: { ...process.env, LOG: log } });
  assert.equal(out, 'error x ERROR: one\nerror ERROR two\nerror y [ERROR] three\nconnected 1\n');
});

test("the engine's multiplexed log stream reads as the lines docker logs prints", () => {
  // Each frame: stream (1 stdout, 2 stderr), three zero bytes, the size (big-endian), the bytes.
  // A size whose bytes look like a newline or a letter must not leak into the text.
  const frame = (stream: number, text: string) => {
    const body = Buffer.from(text);
    const header = Buffer.alloc(8);
    header[0] = stream;
    header.writeUInt32BE(body.length, 4);
    return Buffer.concat([header, body]);
  };
  const lines = ['INFO Connected to Postgres database\n', `ERROR ${'x'.repeat(3)}\n`, `${'y'.repeat(65)}\n`, 'z'.repeat(300) + '\n'];
  const stream = Buffer.concat(lines.map((line, i) => frame(i % 2 ? 2 : 1, line)));
  assert.equal(execFileSync('perl', ['-e', DEMUX], { input: stream, encoding: 'utf8' }), lines.join(''));
});

test("PostgreSQL's configuration files are read with the newest cluster's version", async () => {
  const root = mkdtempSync(join(tmpdir(), 'cxo-pg-'));
  for (const version of ['9.6', '10', '15', '13', 'backup']) mkdirSync(join(root, version, 'main', 'conf.d'), { recursive: true });
  writeFileSync(join(root, '15', 'main', 'pg_hba.conf'), 'local all postgres peer\n');
  writeFileSync(join(root, '15', 'main', '.pg_hba.conf.convex-ops.abcdef'), '');
  const conn = localConnection(script => script.replaceAll('/etc/postgresql', root));
  const cache = new Readings();
  const hba = newestClusterFile('pg_hba.conf');
  const listen = newestClusterFile('conf.d/convex-ops.conf');
  await gatherFacts(conn, [hba, listen], cache);
  assert.equal(conn.commands, 1);
  const read = cache.get(hba)!;
  assert.equal(read.version, '15');
  assert.equal(read.state?.kind, 'file');
  assert.equal(read.state?.kind === 'file' && read.state.content, 'local all postgres peer\n');
  assert.deepEqual(read.state?.stale, [`${root}/15/main/.pg_hba.conf.convex-ops.abcdef`]);
  assert.deepEqual(cache.get(listen), { version: '15', state: { kind: 'absent' } });
  // No cluster at all: nothing is known (the step then stops at "no cluster was found").
  const none = localConnection(script => script.replaceAll('/etc/postgresql', join(root, 'missing')));
  const empty = new Readings();
  await gatherFacts(none, [hba], empty);
  assert.deepEqual(empty.get(hba), {});
});
