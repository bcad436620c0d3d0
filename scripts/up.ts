#!/usr/bin/env zx
import { play } from './lib/play.ts';
import { up } from './lib/steps/up.ts';

await play({
  script: 'up',
  summary: 'Pulls the pinned images and starts the containers when anything changed, then waits until healthy.',
  steps: () => [up],
});
