#!/usr/bin/env zx
import { runScript } from './lib/cli.ts';
import { compose } from './lib/steps/compose.ts';
import { windowGuard } from './lib/steps/window-record.ts';

await runScript({
  script: 'compose',
  summary: 'Writes <root>/docker-compose.yml from files/docker-compose.yml and the inventory.',
  steps: () => [windowGuard, compose],
});
