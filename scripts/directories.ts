#!/usr/bin/env zx
import { runScript } from './lib/cli.ts';
import { directories } from './lib/steps/directories.ts';

await runScript({
  script: 'directories',
  summary: 'Creates the volume folders (data, storage, logs, backups, config) and the root symlink.',
  steps: () => [directories],
});
