// Hosts and facts for unit tests of plans: state as a step would read it, no droplet involved.
import type { Host } from '../../scripts/lib/inventory.ts';
import type { FileState } from '../../scripts/lib/files.ts';
import type { Packages } from '../../scripts/lib/system.ts';

export const testHost: Host = {
  name: 'dev', address: '10.0.0.1', port: 22, user: 'root', known_hosts: '/k', volume: '/mnt/v', root: '/opt/convex',
  instance_name: 'swarm-dev', backend_image: 'r/convex-backend:1', dashboard_image: 'r/convex-dashboard:1', bind_address: '0.0.0.0',
  dashboard_allow: [], firewall: false, acme: { directory: 'https://acme' }, postgres: { mode: 'local', user: 'convex' }, backup: { keep: 3 },
};

/** A host with domains, as the nginx and letsencrypt steps need. */
export const httpsHost: Host = {
  ...testHost,
  domains: { api: 'api.example.test', site: 'site.example.test', dashboard: 'dash.example.test' },
  acme: { directory: 'https://acme.example.test/dir', email: 'ops@example.test' },
};

/** A host whose backups go off-host to an SFTP target it names (password in TEST_RESTIC_PW). */
export const offsiteHost: Host = {
  ...testHost,
  backup: {
    keep: 3,
    offsite: {
      repository: 'sftp:convex-backup@vault.test:/srv/convex', password_env: 'TEST_RESTIC_PW', credentials_env: [], keep_daily: 7, keep_weekly: 4, keep_monthly: 6,
      repository_host: 'vault', sftp: { user: 'convex-backup', host: 'vault.test', port: 22, path: '/srv/convex' },
    },
  },
};

export const absent: FileState = { kind: 'absent' };

export function file(content: string, mode = '644', owner = 'root'): FileState {
  return { kind: 'file', mode, owner, group: owner, content };
}

export function packages(...installed: string[]): Packages {
  return { installed: new Set(installed), unfinished: new Set() };
}
