#!/usr/bin/env zx
// From a bare droplet to a running Convex backend: directories, docker, secret, postgres,
// compose, up, admin-key, then the checks.
import { runScript } from './lib/cli.ts';
import { installScriptSteps } from './lib/runbooks.ts';
import { installChecks } from '../checks/index.ts';

await runScript({
  script: 'install',
  summary: 'Installs Docker, PostgreSQL and the Convex backend and dashboard, idempotently, then runs the checks.',
  extraHelp: '\n  --show                print the admin key\n',
  booleans: ['show'],
  steps: installScriptSteps,
  checks: () => installChecks,
});
