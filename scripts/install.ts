#!/usr/bin/env zx
// From a bare droplet to a running Convex backend: directories, docker, secret, postgres,
// compose, up, admin-key, then the checks.
import { runScript } from './lib/cli.ts';
import { installSteps } from './lib/runbooks.ts';
import { installChecks } from '../checks/index.ts';
import { windowGuard } from './lib/steps/window-record.ts';

await runScript({
  script: 'install',
  summary: 'Installs Docker, PostgreSQL and the Convex backend and dashboard, idempotently, then runs the checks.',
  extraHelp: '\n  --show                print the admin key\n',
  booleans: ['show'],
  steps: (host, run) => [windowGuard, ...installSteps(host, run)],
  checks: () => installChecks,
});
