#!/usr/bin/env zx
import { play } from './lib/play.ts';
import { directories } from './lib/steps/directories.ts';

await play({
  script: 'directories',
  summary: 'Creates the volume folders (data, storage, logs, backups, config) and the root symlink.',
  steps: () => [directories],
});
