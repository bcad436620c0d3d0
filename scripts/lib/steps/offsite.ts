// Off-host copies with restic ([backup] repository): what the droplet needs (restic, its own
// ed25519 key made on it, the target's pinned host key), the changes that copy, check, list and
// fetch, and how the repository password reaches restic. The password and credentials travel
// as sh assignments on the change's stdin (or, for the scheduled job alone, in a root-owned
// 0600 file): never on a command line, so never in a process list. The restic commands
// themselves are files/convex-ops-backup.sh's, like the local backup's.
import type { Host, OffsiteConfig } from '../inventory.ts';
import type { Step } from '../step.ts';
import { memoKey } from '../step.ts';
import type { FileState } from '../files.ts';
import { fileFact, MANAGED_MARKER } from '../files.ts';
import type { Change } from '../plan.ts';
import { fileChanges, packageChanges, phase } from '../plan.ts';
import type { Packages } from '../system.ts';
import { installedPackages } from '../system.ts';
import { hostPattern } from '../known-hosts.ts';
import { quote, sh } from '../shell.ts';

/** The droplet's own key for the SFTP target, made on the droplet and never copied off it. */
export const CLIENT_KEY = '/root/.ssh/convex-ops-backup_ed25519';
/** The SFTP target's host key, pinned: restic's ssh checks it strictly. */
export const TARGET_KNOWN_HOSTS = '/etc/convex-ops/backup_known_hosts';
/** The repository password and credentials for the scheduled job (root, 0600). */
export const SECRETS_FILE = '/etc/convex-ops/restic.env';
/** Where `fetch` leaves the .env of a snapshot, for the restore to put in place. */
export const FETCHED_ENV = '/var/lib/convex-ops/snapshot.env';

/** The offsite config of a host that has one; an error naming the key otherwise. */
export function offsiteOf(host: Host): OffsiteConfig {
  const offsite = host.backup.offsite;
  if (!offsite) throw new Error(`hosts.${host.name}.backup.repository is not set: there is no off-host repository. Set [backup] repository and password_env in the inventory.`);
  return offsite;
}

/** The ssh command restic runs for an sftp: repository: this key, this host key, no prompt. */
export function sftpCommand(offsite: OffsiteConfig | undefined): string {
  const sftp = offsite?.sftp;
  if (!sftp) return '';
  return [
    'ssh', '-i', CLIENT_KEY, '-o', 'IdentitiesOnly=yes', '-o', `UserKnownHostsFile=${TARGET_KNOWN_HOSTS}`, '-o', 'StrictHostKeyChecking=yes',
    '-o', 'BatchMode=yes', '-o', 'ConnectTimeout=20', '-o', 'ServerAliveInterval=30', '-p', String(sftp.port), `${sftp.user}@${sftp.host}`, '-s', 'sftp',
  ].join(' ');
}

/** The backup script's off-host settings (all empty without a repository). */
export function offsiteSettings(host: Host): Record<string, string | number> {
  const offsite = host.backup.offsite;
  return {
    repository: offsite?.repository ?? '',
    host_name: host.name,
    instance: host.instance_name,
    keep_daily: offsite?.keep_daily ?? 0,
    keep_weekly: offsite?.keep_weekly ?? 0,
    keep_monthly: offsite?.keep_monthly ?? 0,
    sftp_command: sftpCommand(offsite),
    secrets: SECRETS_FILE,
    fetched_env: FETCHED_ENV,
  };
}

/**
 * The password and credentials as sh assignments, values quoted, read from the operator's
 * environment (cli.ts's preflight made sure they are set and registered them as secrets).
 */
export function secretsText(offsite: OffsiteConfig, env: NodeJS.ProcessEnv = process.env): string {
  const assignments = [['RESTIC_PASSWORD', offsite.password_env], ...offsite.credentials_env.map(name => [name, name])];
  return `# ${MANAGED_MARKER}: the restic repository password and credentials.\n${assignments.map(([name, from]) => `${name}=${quote(env[from!] ?? '')}\n`).join('')}`;
}

// ------------------------------------------------------------------------------------ the client

const publicKeyPath = `${CLIENT_KEY}.pub`;

/** The droplet's public key for the target, "ssh-ed25519 AAAA…", once it has one. */
export const clientPublicKey = fileFact(publicKeyPath);

/** "type base64" of a public key file, without its comment. */
export function keyOf(state: FileState): string | undefined {
  if (state.kind !== 'file') return undefined;
  const [type, base64] = state.content.trim().split(/\s+/);
  return type && base64 ? `${type} ${base64}` : undefined;
}

export interface ClientFacts { packages: Packages; publicKey: FileState }

/** restic, and for an SFTP target the ssh client and the droplet's own key, made on the droplet. */
export function planOffsiteClient(facts: ClientFacts, host: Host): Change[] {
  const offsite = offsiteOf(host);
  const packages = packageChanges(facts.packages, offsite.sftp ? ['restic', 'openssh-client'] : ['restic']);
  if (!offsite.sftp || keyOf(facts.publicKey)) return packages;
  return [
    ...packages,
    {
      label: `make the droplet's own ed25519 key for the backup target (${CLIENT_KEY})`,
      script: sh`install -d -m 700 /root/.ssh && { [ -e ${CLIENT_KEY} ] || ssh-keygen -q -t ed25519 -N '' -C ${`convex-ops-backup@${host.name}`} -f ${CLIENT_KEY}; } && ssh-keygen -y -f ${CLIENT_KEY} >${publicKeyPath}`,
    },
  ];
}

export const offsiteClient: Step = {
  name: 'offsite-client',
  phases: [
    phase({
      facts: () => ({ packages: installedPackages, publicKey: clientPublicKey }),
      plan: planOffsiteClient,
      ok: ({ publicKey }, host) => {
        const key = keyOf(publicKey);
        const sftp = host.backup.offsite?.sftp;
        if (!sftp || !key) return 'restic installed';
        return host.backup.offsite?.repository_host
          ? `restic installed; the droplet's key: ${key}`
          : `restic installed; add the droplet's key to ${sftp.user}@${sftp.host}'s authorized_keys, restricted to SFTP: restrict,command="internal-sftp" ${key} convex-ops-backup@${host.name}`;
      },
    }),
  ],
};

/** The known_hosts file restic's ssh checks: the target's host key under its name (and port). */
export function knownHostsChanges(state: FileState, host: Host, pinned: string | undefined): Change[] {
  const sftp = host.backup.offsite?.sftp;
  if (!sftp) return [];
  const pattern = hostPattern(sftp.host, sftp.port);
  if (pinned) {
    const content = `# ${MANAGED_MARKER}: the host key of ${host.backup.offsite!.repository_host}, the backup target.\n${pattern} ${pinned}\n`;
    return fileChanges(state, { path: TARGET_KNOWN_HOSTS, content, mode: '644', label: `${TARGET_KNOWN_HOSTS} (${pattern})` });
  }
  const known = state.kind === 'file' && state.content.split('\n').some(line => line.split(/\s+/)[0] === pattern);
  if (!known) {
    throw new Error(
      `the backup target's host key is not pinned: ${TARGET_KNOWN_HOSTS} on ${host.name} has no line for ${pattern}. ` +
        `Add its key as "${pattern} ssh-ed25519 AAAA…" (read it on the target: cat /etc/ssh/ssh_host_ed25519_key.pub), or name the target in repository_host. Nothing was changed.`,
    );
  }
  return [];
}

// ------------------------------------------------------------------------------------ the copies

export interface Snapshot { id: string; short_id: string; time: string; hostname: string; tags?: string[]; paths: string[] }
export interface OffsiteCopy { snapshot: string; forgotten: number; initialized: boolean }

/** The copy this run made (all.ts-style callers and tests read it). */
export const OFFSITE_COPY = memoKey<OffsiteCopy>('offsite-copy');

/** What `convex-ops-backup offsite` printed: the snapshot it made and how many it forgot. */
export function parseOffsiteCopy(stdout: string): OffsiteCopy {
  const snapshots = JSON.parse(/^SNAPSHOTS (.*)$/m.exec(stdout)?.[1] ?? 'null') as Snapshot[] | null;
  const snapshot = snapshots?.at(-1)?.short_id;
  if (!snapshot) throw new Error(`the off-host copy finished without naming its snapshot:\n${stdout}`);
  const groups = JSON.parse(/^FORGET (.*)$/m.exec(stdout)?.[1] ?? '[]') as Array<{ remove: unknown[] | null }> | null;
  const forgotten = (groups ?? []).reduce((sum, group) => sum + (group.remove?.length ?? 0), 0);
  return { snapshot, forgotten, initialized: /^INITIALIZED$/m.test(stdout) };
}

const retention = (o: OffsiteConfig) => `keep daily ${o.keep_daily}, weekly ${o.keep_weekly}, monthly ${o.keep_monthly}`;

/** Copies the backup the run just made (the folder and .env) off-host, then forgets by retention. */
export function copyOffsite(host: Host, backupScript: string): Change {
  const offsite = offsiteOf(host);
  return {
    label: `copy the backup and .env to ${offsite.repository}, then forget --prune (${retention(offsite)})`,
    script: sh`${backupScript} offsite -`,
    stdin: secretsText(offsite),
    streams: true,
    after: (stdout, memo) => {
      const copy = parseOffsiteCopy(stdout);
      memo.set(OFFSITE_COPY, copy);
      const made = copy.initialized ? `created the repository ${offsite.repository}; ` : '';
      return `${made}snapshot ${copy.snapshot} in ${offsite.repository}${copy.forgotten ? `; forgot ${copy.forgotten} by retention (${retention(offsite)})` : ''}`;
    },
  };
}

/** restic check, reading a tenth of the data. */
export function checkOffsite(host: Host, backupScript: string): Change {
  const offsite = offsiteOf(host);
  return {
    label: `check ${offsite.repository} (restic check, reading 10% of the data)`,
    script: sh`${backupScript} check -`,
    stdin: secretsText(offsite),
    streams: true,
    after: () => `checked ${offsite.repository}: no errors (restic check, 10% of the data read)`,
  };
}

// ------------------------------------------------------------------------------------ the list

export interface SnapshotListing { snapshot: Snapshot; bytes: number | undefined }

/** What `convex-ops-backup snapshots` printed: the instance's snapshots, oldest first, with their sizes. */
export function parseSnapshots(stdout: string): SnapshotListing[] {
  const snapshots = (JSON.parse(/^SNAPSHOTS (.*)$/m.exec(stdout)?.[1] ?? 'null') as Snapshot[] | null) ?? [];
  const sizes = new Map([...stdout.matchAll(/^SIZE (\S+) (.*)$/gm)].map(m => [m[1]!, (JSON.parse(m[2]!) as { total_size?: number }).total_size]));
  return snapshots.map(snapshot => ({ snapshot, bytes: sizes.get(snapshot.short_id) }));
}

/** One snapshot as the list shows it: id, UTC time, host, the local backup it copies, size. */
export function describeSnapshot({ snapshot, bytes }: SnapshotListing, formatBytes: (n: number) => string): string {
  const time = new Date(snapshot.time).toISOString().replace(/\.\d+Z$/, 'Z');
  const backup = snapshot.tags?.find(t => t.startsWith('backup:'))?.slice('backup:'.length);
  return `${snapshot.short_id} ${time} ${snapshot.hostname}${backup ? ` backup ${backup}` : ''}${bytes !== undefined ? ` (${formatBytes(bytes)})` : ''}`;
}
