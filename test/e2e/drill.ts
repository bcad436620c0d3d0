// What the disaster recovery drill (recovery.test.ts) and the recovery-time benchmark
// (test/bench/recovery.ts) share: the off-host backup settings of a source and its replacement,
// and the disaster itself, a droplet's container and data volume gone with every local backup.
import type { Fleet } from '../fleet/index.ts';
import { docker } from '../fleet/proc.ts';

/** A [hosts.X.backup] table: restic over SFTP to the "vault" droplet, the password in `passwordEnv`. */
export function vaultBackup(passwordEnv: string): Record<string, string> {
  return { repository: 'sftp:convex-backup@vault.test:/srv/convex', password_env: passwordEnv, repository_host: 'vault' };
}

/** Removes the droplet's container and its data volume (docker rm -f -v; volume rm). */
export async function destroyDroplet(fleet: Fleet, droplet: string): Promise<void> {
  const container = fleet.droplets[droplet]!.container;
  await docker(['rm', '-f', '-v', container]);
  await docker(['volume', 'rm', `${container}-data`]);
}
