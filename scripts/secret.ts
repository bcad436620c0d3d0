#!/usr/bin/env zx
import { play } from './lib/play.ts';
import { directories } from './lib/steps/directories.ts';
import { secret } from './lib/steps/secret.ts';

await play({
  script: 'secret',
  summary: 'Writes <root>/.env with INSTANCE_SECRET (once, never rotated) and the database credentials, mode 0600.',
  steps: () => [directories, secret],
});
