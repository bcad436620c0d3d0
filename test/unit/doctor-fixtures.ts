// What doctor's probe read on a healthy fleet droplet, as DoctorState fixtures the doctor tests
// alter the way each failure alters it.
import type { Host } from '../../scripts/lib/inventory.ts';
import { containersFrom, parseDisk, parseListeners, parseLog, parsePostgres } from '../../scripts/lib/doctor.ts';
import type { DoctorState } from '../../scripts/lib/doctor.ts';
import { renderCompose } from '../../scripts/lib/steps/compose.ts';

export const host: Host = {
  name: 'dev', address: '172.21.0.4', port: 22, user: 'root', known_hosts: '/k', volume: '/mnt/convex_dev', root: '/opt/convex',
  instance_name: 'convex-self-hosted', backend_image: 'registry.test:5000/convex-backend:v1', dashboard_image: 'registry.test:5000/convex-dashboard:v1',
  bind_address: '127.0.0.1', domains: { api: 'api.dev.test', site: 'dev.test', dashboard: 'dashboard.dev.test' }, dashboard_allow: [], firewall: false,
  acme: { directory: 'https://pebble.test:14000/dir', email: 'ops@dev.test' }, postgres: { mode: 'local', user: 'convex' }, backup: { keep: 3 },
};

// What the probe read on a healthy fleet droplet (trimmed).
const SS = `LISTEN 0      128       0.0.0.0:22    0.0.0.0:* users:(("sshd",pid=7,fd=3))
LISTEN 0      4096    127.0.0.1:6791  0.0.0.0:* users:(("docker-proxy",pid=4320,fd=4))
LISTEN 0      244     127.0.0.1:5432  0.0.0.0:* users:(("postgres",pid=3958,fd=5))
LISTEN 0      4096    127.0.0.1:3210  0.0.0.0:* users:(("docker-proxy",pid=8715,fd=4))
LISTEN 0      4096    127.0.0.1:3211  0.0.0.0:* users:(("docker-proxy",pid=8701,fd=4))
LISTEN 0      244    172.17.0.1:5432  0.0.0.0:* users:(("postgres",pid=3958,fd=6))
LISTEN 0      128          [::]:22       [::]:* users:(("sshd",pid=7,fd=4))`;
const CONTAINER_DOCS = [
  { Name: '/convex-backend', RestartCount: 0, Config: { Image: 'registry.test:5000/convex-backend:v1' }, State: { Status: 'running', Running: true, Restarting: false, ExitCode: 0, Error: '', StartedAt: '2026-11-29T22:58:09.273826254Z', FinishedAt: '0001-01-01T00:00:00Z', Health: { Status: 'healthy', FailingStreak: 0, Log: [{ ExitCode: 0, Output: 'v1' }] } } },
  { Name: '/convex-dashboard', RestartCount: 0, Config: { Image: 'registry.test:5000/convex-dashboard:v1' }, State: { Status: 'running', Running: true, Restarting: false, ExitCode: 0, Error: '', StartedAt: '2026-11-29T22:45:05.477681945Z', FinishedAt: '0001-01-01T00:00:00Z' } },
];
const LOG = `2026-11-29T22:58:11.188356191Z 2026-11-29T22:58:11Z INFO Instance name: convex-self-hosted
2026-11-29T22:58:12.037420735Z 2026-11-29T22:58:12Z INFO Connected to Postgres database: convex_self_hosted
2026-11-29T22:58:12.131959639Z 2026-11-29T22:58:12Z INFO backend listening on 0.0.0.0:3210`;
export const DF = `space /mnt/convex_dev /dev/vda       270553174016 37497864192 71446429696      35% /mnt/convex_dev
inodes /mnt/convex_dev /dev/vda       16777216 605151 16172065    4% /mnt/convex_dev
space /var/lib/docker /dev/vda       270553174016 37526867968 71417425920      35% /var/lib/docker
inodes /var/lib/docker /dev/vda       16777216 605142 16172074    4% /var/lib/docker
space / overlay        270553174016 37533126656 71411167232      35% /
inodes / overlay        16777216 605142 16172074    4% /`;
const PG = 'version 15\nstatus online\nlisten localhost,172.17.0.1\nhba-block\nhba 172.17.0.0/16\nhba 172.18.0.0/16\ndb 1\nrole 1\n';
export const SECRET = 'c0ffee'.repeat(10) + 'beef';
export const PASSWORD = 'J8PpDXq2n9sWb7ZkR4mTfVhL6cYeAo3Gi1uNxE5d';
const ENV = `# Managed by convex-ops.\nCOMPOSE_PROJECT_NAME=convex\nINSTANCE_SECRET=${SECRET}\nPOSTGRES_PASSWORD=${PASSWORD}\nPOSTGRES_URL=postgresql://convex:${PASSWORD}@host.docker.internal:5432?sslmode=disable\nCONVEX_ADMIN_KEY=convex-self-hosted|0123abcd\n`;

export function healthy(): DoctorState {
  return {
    docker: { cli: true, engine: true, running: true, compose: 'v2' },
    networks: { bridgeGateway: '172.17.0.1', subnets: ['172.17.0.0/16', '172.18.0.0/16'], convexNetwork: true },
    containers: containersFrom(CONTAINER_DOCS),
    log: parseLog(LOG),
    listeners: parseListeners(SS),
    disks: parseDisk(DF),
    env: { present: true, content: ENV },
    compose: { present: true, content: renderCompose(host) },
    postgres: parsePostgres(PG),
    http: { version: '200', adminKey: '200' },
    dns: { names: new Map([['api.dev.test', ['172.21.0.4']], ['dev.test', ['172.21.0.4']], ['dashboard.dev.test', ['172.21.0.4']]]), self: ['172.17.0.1', '172.18.0.1', '172.21.0.4'] },
    cert: { present: true, usable: true, notAfter: 1_900_000_000 + 80 * 86400, now: 1_900_000_000, names: ['api.dev.test', 'dev.test', 'dashboard.dev.test'], verified: true, server: 'https://acme.dev.test/dir', ocsp: '' },
    localAdminKey: 'convex-self-hosted|0123abcd',
  };
}

/** A backend container that crash-loops: restarting, with restarts, started at `started`. */
export function looping(state: DoctorState, logLines: string[], started = '2026-11-30T10:00:00.5Z'): DoctorState {
  state.containers.set('convex-backend', { ...state.containers.get('convex-backend')!, status: 'restarting', restarts: 5, exitCode: 1, startedAt: started, health: 'starting' });
  state.log = parseLog(logLines.map(l => `2026-11-30T10:00:01.000000001Z ${l}`).join('\n'));
  state.http = { version: '000', adminKey: '000' };
  return state;
}
