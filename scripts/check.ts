#!/usr/bin/env zx
import { play } from './lib/play.ts';
import { allChecks } from '../checks/index.ts';

await play({
  script: 'check',
  summary: 'Runs the post-conditions in checks/ against the hosts; changes nothing.',
  steps: () => [],
  checks: () => allChecks,
});
