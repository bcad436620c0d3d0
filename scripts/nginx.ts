#!/usr/bin/env zx
// nginx in front of the backend, for a host with [domains]: the site file, its link, and a
// reload when it changed. Without a certificate yet, port 80 answers ACME challenges only.
import { runScript } from './lib/cli.ts';
import { nginx } from './lib/steps/nginx.ts';
import { windowGuard } from './lib/steps/window-record.ts';
import { nginxConfig } from '../checks/nginx-config.ts';

await runScript({
  script: 'nginx',
  summary: 'Installs nginx and the site that proxies the host\'s domains to the backend; validated with nginx -t before it goes live.',
  steps: () => [windowGuard, nginx],
  checks: () => [nginxConfig],
});
