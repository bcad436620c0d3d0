// npm run test:e2e: every test/e2e/*.test.ts, three files at a time, the longest first. node --test
// sorts the files it is given by name, which would start the longest file last and leave it
// running alone at the end; run() keeps this order. Arguments: files to run instead of all.
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { run } from 'node:test';
import { tap } from 'node:test/reporters';
import { repoRoot } from './fleet/paths.ts';

const LONGEST_FIRST = ['reliability', 'debian13', 'install', 'doctor', 'promote', 'ux', 'https', 'ssh'];

const dir = join(repoRoot, 'test', 'e2e');
const all = readdirSync(dir).filter(name => name.endsWith('.test.ts'));
const rank = (name: string) => {
  const i = LONGEST_FIRST.indexOf(name.replace(/\.test\.ts$/, ''));
  return i === -1 ? LONGEST_FIRST.length : i;
};
const files = process.argv.length > 2 ? process.argv.slice(2) : all.sort((a, b) => rank(a) - rank(b) || a.localeCompare(b)).map(name => join(dir, name));

run({ files, concurrency: 3, timeout: 60 * 60_000 })
  .on('test:fail', () => (process.exitCode = 1))
  .compose(tap)
  .pipe(process.stdout);
