#!/usr/bin/env zx
import { play } from './lib/play.ts';
import { compose } from './lib/steps/compose.ts';

await play({
  script: 'compose',
  summary: 'Writes <root>/docker-compose.yml from files/docker-compose.yml and the inventory.',
  steps: () => [compose],
});
