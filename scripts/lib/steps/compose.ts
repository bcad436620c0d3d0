// <root>/docker-compose.yml, built with the yaml package from files/docker-compose.yml plus the
// host's values. Secrets stay in .env and reach the containers through ${…} interpolation.
import type { Host } from '../inventory.ts';
import type { Step } from '../step.ts';
import { fileFact, MANAGED_MARKER } from '../files.ts';
import type { FileState } from '../files.ts';
import { fileChanges, phase } from '../plan.ts';
import type { Change } from '../plan.ts';
import { CONVEX_NETWORK } from './docker.ts';
import { PG_CA_PATH } from './postgres-external.ts';
import { composePath } from './secret.ts';
import { loadYaml, yaml } from '../yaml.ts';
import { templateText } from '../templates.ts';
import { composeValue } from '../backend-settings.ts';
import { storageEnvironment } from '../storage.ts';
import type { Service as SettingsService, Settings } from '../backend-settings.ts';

interface Service { image: string; ports: string[]; volumes?: string[]; environment: Record<string, string> }
interface ComposeFile { services: { backend: Service; dashboard: Service }; networks: { default: { name: string } } }

/** The URLs clients use: the https names when the host has domains, else the published ports. */
export function origins(host: Host): { cloud: string; site: string; dashboard: string } {
  if (host.domains) return { cloud: `https://${host.domains.api}`, site: `https://${host.domains.site}`, dashboard: `https://${host.domains.dashboard}` };
  const address = host.bind_address === '0.0.0.0' ? host.address : host.bind_address;
  return { cloud: `http://${address}:3210`, site: `http://${address}:3211`, dashboard: `http://${address}:6791` };
}

export function renderCompose(host: Host): string {
  const doc = yaml().parse(templateText('docker-compose.yml')) as ComposeFile;
  const { backend, dashboard } = doc.services;
  const { cloud, site } = origins(host);
  // On loopback only with domains (nginx is in front) and with firewall = true: ports Docker
  // publishes are forwarded by its own NAT rules, before ufw or the INPUT chain see a packet, so
  // loopback is the one place they are closed whatever the firewall, Docker or a reboot do.
  // Without domains, clients then reach them through an SSH tunnel (inventory.ts sets the address).
  const bind = host.bind_address;
  // The inventory's settings first, so that no setting could ever take the place of one below.
  applySettings(backend, 'backend', host.backend_env);
  applySettings(dashboard, 'dashboard', host.dashboard_env);
  Object.assign(backend.environment, storageEnvironment(host.storage));
  backend.image = host.backend_image;
  backend.ports = [`${bind}:3210:3210`, `${bind}:3211:3211`];
  backend.volumes = [`${host.volume}/data:/convex/data`];
  Object.assign(backend.environment, { INSTANCE_NAME: host.instance_name, CONVEX_CLOUD_ORIGIN: cloud, CONVEX_SITE_ORIGIN: site });
  if (host.postgres.mode === 'local') {
    // The local server's snakeoil certificate cannot be verified: see POSTGRES_URL in secret.ts.
    backend.environment.DO_NOT_REQUIRE_SSL = 'true';
  } else if (host.postgres.ca_file) {
    backend.volumes.push(`${PG_CA_PATH(host)}:/convex/pg-ca.pem:ro`);
    backend.environment.PG_CA_FILE = '/convex/pg-ca.pem';
  }
  dashboard.image = host.dashboard_image;
  dashboard.ports = [`${bind}:6791:6791`];
  dashboard.environment.NEXT_PUBLIC_DEPLOYMENT_URL = cloud;
  doc.networks.default.name = CONVEX_NETWORK;
  // Written as YAML 1.1, which docker-compose v1 reads: a setting's "on", "yes" or "no" stays a
  // quoted string there, where 1.2's rules would leave it bare and v1 would read a boolean.
  return `# ${MANAGED_MARKER} from files/docker-compose.yml and the inventory: edit those, not this file.\n${yaml().stringify(doc, { lineWidth: 0, version: '1.1' })}`;
}

/** [backend_env] or [dashboard_env] in a service's environment: secrets as ${…} from .env. */
function applySettings(service: Service, name: SettingsService, settings: Settings | undefined): void {
  for (const [variable, setting] of Object.entries(settings ?? {})) service.environment[variable] = composeValue(name, variable, setting);
}

/** docker-compose.yml as the host's values make it: nothing when it is so already. */
export function planCompose(file: FileState, host: Host): Change[] {
  return fileChanges(file, { path: composePath(host), content: renderCompose(host), mode: '644', label: 'docker-compose.yml' });
}

export const compose: Step = {
  name: 'compose',
  warm: loadYaml,
  phases: [
    phase({
      facts: host => ({ file: fileFact(composePath(host)) }),
      plan: ({ file }, host) => planCompose(file, host),
      ok: (_, host) => `docker-compose.yml pins ${host.backend_image.split('/').pop()} and ${host.dashboard_image.split('/').pop()}`,
    }),
  ],
};
