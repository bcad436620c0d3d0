#!/usr/bin/env zx
// From HTTP-only to HTTPS in one run: nginx (ACME challenges on port 80), the certificate from
// the inventory's ACME directory, then the site's HTTPS configuration, with renewals set up.
import { play } from './lib/play.ts';
import { nginx } from './lib/steps/nginx.ts';
import { letsencrypt } from './lib/steps/letsencrypt.ts';
import { httpsChecks } from '../checks/index.ts';

await play({
  script: 'letsencrypt',
  summary: 'Obtains (or expands) the certificate for the host\'s domains with certbot, switches nginx to HTTPS and sets up renewals.',
  steps: () => [nginx, letsencrypt],
  checks: () => httpsChecks,
});
