#!/usr/bin/env zx
// From HTTP-only to HTTPS in one run: nginx (ACME challenges on port 80), the certificate from
// the inventory's ACME directory, then the site's HTTPS configuration, with renewals set up.
import { runScript } from './lib/cli.ts';
import { nginx } from './lib/steps/nginx.ts';
import { letsencrypt } from './lib/steps/letsencrypt.ts';
import { httpsChecks } from '../checks/index.ts';

await runScript({
  script: 'letsencrypt',
  summary: 'Obtains (or expands) the certificate for the host\'s domains with certbot, switches nginx to HTTPS and sets up renewals.',
  steps: () => [nginx, letsencrypt],
  checks: () => httpsChecks,
});
