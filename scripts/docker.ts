#!/usr/bin/env zx
import { runScript } from './lib/cli.ts';
import { docker } from './lib/steps/docker.ts';

await runScript({
  script: 'docker',
  summary: 'Installs and starts the Docker engine and Compose (v2 plugin, or docker-compose v1).',
  steps: () => [docker],
});
