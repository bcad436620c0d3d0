// Runs a remote script here, with sh, against stand-in commands put first on the PATH (docker,
// curl…), and a fake clock: `date +%s` reads it and `sleep` moves it on (by $FAKE/pace times
// what it was asked, default 1), so a 150 s wait takes no time. The script's own shell logic is what is tested; no host or Docker is involved.
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface ScriptRun {
  code: number;
  stdout: string;
  stderr: string;
  /** Where the fakes keep their files ($FAKE in them). */
  dir: string;
}

/** Syntax errors `sh -n` finds in a script, or '' when there are none. */
export function syntaxErrors(script: string): string {
  const result = spawnSync('sh', ['-n'], { input: script, encoding: 'utf8' });
  return result.status === 0 ? '' : result.stderr || `sh -n exited ${result.status}`;
}

/**
 * Runs `script` with each of `commands` (name → sh body) as an executable on the PATH, plus the
 * fake clock. `files` are written into $FAKE first.
 */
export function runWithFakes(script: string, commands: Record<string, string>, opts: { files?: Record<string, string>; stdin?: string } = {}): ScriptRun {
  const dir = mkdtempSync(join(tmpdir(), 'convex-ops-fakes-'));
  const bin = join(dir, 'bin');
  mkdirSync(bin);
  const all: Record<string, string> = {
    date: 'cat "$FAKE/clock"',
    sleep: 'echo $(( $(cat "$FAKE/clock") + ${1%.*} * $(cat "$FAKE/pace" 2>/dev/null || echo 1) )) > "$FAKE/clock"',
    ...commands,
  };
  for (const [name, body] of Object.entries(all)) {
    writeFileSync(join(bin, name), `#!/bin/sh\n${body}\n`);
    chmodSync(join(bin, name), 0o755);
  }
  writeFileSync(join(dir, 'clock'), '1000\n');
  for (const [name, content] of Object.entries(opts.files ?? {})) writeFileSync(join(dir, name), content);
  const result = spawnSync('sh', ['-c', script], { input: opts.stdin ?? '', encoding: 'utf8', env: { ...process.env, FAKE: dir, PATH: `${bin}:${process.env.PATH}` } });
  return { code: result.status ?? -1, stdout: result.stdout, stderr: result.stderr, dir };
}
