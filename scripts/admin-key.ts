#!/usr/bin/env zx
import { runScript } from './lib/cli.ts';
import { adminKeyStep } from './lib/runbooks.ts';

await runScript({
  script: 'admin-key',
  summary: 'Generates the admin key once (generate_admin_key.sh), keeps it in the host .env and writes .secrets/<host>.env for the Convex CLI.',
  extraHelp: '\n  --show                print the admin key\n',
  booleans: ['show'],
  steps: (_host, run) => [adminKeyStep(run)],
});
