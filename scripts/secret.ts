#!/usr/bin/env zx
import { runScript } from './lib/cli.ts';
import { directories } from './lib/steps/directories.ts';
import { secret } from './lib/steps/secret.ts';

await runScript({
  script: 'secret',
  summary: 'Writes <root>/.env with INSTANCE_SECRET (once, never rotated) and the database credentials, mode 0600.',
  steps: () => [directories, secret],
});
