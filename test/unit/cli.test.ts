// What every script shares around its hosts' work (scripts/lib/cli.ts), without a droplet: a
// host whose work throws fails alone, visibly, and its session is closed all the same.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Args } from '../../scripts/lib/cli.ts';
import { EXIT, exitCode, forEachHost, repeatedOptionProblem, sessionFor, withSession } from '../../scripts/lib/cli.ts';
import { registerSecret } from '../../scripts/lib/redact.ts';
import { recapOf, Reporter } from '../../scripts/lib/report.ts';
import { testHost } from './fixtures.ts';

test("an error thrown in one host's work is that host's failure, redacted; its session is closed and the other host carries on", async () => {
  const hosts = [testHost, { ...testHost, name: 'prod' }];
  const logPath = join(mkdtempSync(join(tmpdir(), 'cli-')), 'convex-ops.log');
  // --json sends the human lines to stderr, so they stay out of the test runner's stdout.
  const reporter = new Reporter({ json: true, showDiffs: false, logPath, hosts: hosts.map(h => h.name), script: 'install', argv: [] });
  registerSecret('s3cret-in-an-error');
  const closed: string[] = [];
  const runs = await forEachHost(hosts, 2, host => {
    const session = sessionFor(host, { _: [] } as Args, reporter, 'install');
    const close = session.close.bind(session);
    session.close = () => {
      closed.push(host.name);
      return close();
    };
    return withSession(session, async () => {
      if (host.name === 'dev') throw new Error('cannot build the steps: password s3cret-in-an-error rejected');
      session.report({ step: 'docker', status: 'ok', detail: '', changes: [], diffs: [], seconds: 0 });
    });
  });
  assert.deepEqual(closed.sort(), ['dev', 'prod']);
  assert.deepEqual(runs.map(r => [r.host, r.steps.map(s => `${s.step} ${s.status}: ${s.detail}`)]), [
    ['dev', ['run failed: cannot build the steps: password ******** rejected']],
    ['prod', ['docker ok: ']],
  ]);
  assert.deepEqual(runs.map(r => recapOf(r).failed), [1, 0]);
  assert.equal(exitCode(runs, false), EXIT.failed);
});

test('an option of one value given twice is refused with how to give it; once is fine', () => {
  const strings = ['host', 'inventory'];
  assert.equal(repeatedOptionProblem({ _: [], host: 'dev,prod', inventory: 'a.toml' } as Args, strings), undefined);
  assert.equal(repeatedOptionProblem({ _: [], host: ['prod', 'all'] } as Args, strings), '--host was given 2 times (prod, all): name several hosts once, comma-separated: --host prod,all. Nothing was changed.');
  assert.equal(repeatedOptionProblem({ _: [], host: 'dev', inventory: ['a.toml', 'b.toml'] } as Args, strings), '--inventory was given 2 times (a.toml, b.toml): give --inventory once. Nothing was changed.');
});
