// Which steps each runbook runs, in order: the base install (scripts/install.ts), and what all.ts adds.
import type { Host } from './inventory.ts';
import type { RunInfo } from './play.ts';
import type { Step } from './step.ts';
import { directories } from './steps/directories.ts';
import { docker } from './steps/docker.ts';
import { secret } from './steps/secret.ts';
import { postgres } from './steps/postgres.ts';
import { compose } from './steps/compose.ts';
import { up } from './steps/up.ts';
import { adminKey } from './steps/admin-key.ts';
import { nginx } from './steps/nginx.ts';
import { letsencrypt } from './steps/letsencrypt.ts';
import { firewall } from './steps/firewall.ts';

export function adminKeyStep(run: RunInfo): Step {
  return adminKey({ local: run.local, show: Boolean(run.args.show), print: line => process.stdout.write(line + '\n') });
}

export function installSteps(_host: Host, run: RunInfo): Step[] {
  return [directories, docker, secret, postgres, compose, up, adminKeyStep(run)];
}

/** HTTPS in front of the backend: nginx, the certificate (which switches nginx to HTTPS), the firewall. */
export function httpsSteps(host: Host, _run: RunInfo): Step[] {
  return [nginx, letsencrypt, ...(host.firewall ? [firewall] : [])];
}

/** What all.ts converges a host to: the install, plus HTTPS when the host has domains. */
export function allSteps(host: Host, run: RunInfo): Step[] {
  return [...installSteps(host, run), ...(host.domains ? httpsSteps(host, run) : [])];
}
