#!/usr/bin/env zx
import { runScript } from './lib/cli.ts';
import { directories } from './lib/steps/directories.ts';
import { secret } from './lib/steps/secret.ts';
import { postgresStep } from './lib/steps/postgres.ts';

await runScript({
  script: 'postgres',
  summary: 'Local mode: installs PostgreSQL, the role, the database, pg_hba and listen_addresses. External mode: checks the server over TLS.',
  steps: host => [directories, secret, postgresStep(host)],
});
