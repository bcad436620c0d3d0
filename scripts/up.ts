#!/usr/bin/env zx
import { runScript } from './lib/cli.ts';
import { up } from './lib/steps/up.ts';
import { windowGuard } from './lib/steps/window-record.ts';

await runScript({
  script: 'up',
  summary: 'Pulls the pinned images and starts the containers when anything changed, then waits until healthy.',
  steps: () => [windowGuard, up],
});
