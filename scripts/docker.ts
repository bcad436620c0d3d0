#!/usr/bin/env zx
import { play } from './lib/play.ts';
import { docker } from './lib/steps/docker.ts';

await play({
  script: 'docker',
  summary: 'Installs and starts the Docker engine and Compose (v2 plugin, or docker-compose v1).',
  steps: () => [docker],
});
