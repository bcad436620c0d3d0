#!/usr/bin/env zx
import { runScript } from './lib/cli.ts';
import { allChecks } from '../checks/index.ts';

await runScript({
  script: 'check',
  summary: 'Runs the post-conditions in checks/ against the hosts; changes nothing.',
  steps: () => [],
  checks: () => allChecks,
});
