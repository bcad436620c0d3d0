// The SFTP target of off-host backups, on an inventory host ([backup] repository_host): a
// dedicated user that can do nothing but SFTP, the repository's folder owned by it, and each
// droplet's own public key in its authorized_keys, restricted to SFTP ("restrict" takes away
// forwarding, agents and terminals; command="internal-sftp" every command but SFTP). The
// target's host key is read here, for the droplets to pin.
import type { Host, SftpTarget } from '../inventory.ts';
import type { Fact, Step } from '../step.ts';
import type { FileState } from '../files.ts';
import { fileFact, MANAGED_MARKER } from '../files.ts';
import type { Change } from '../plan.ts';
import { fileChanges, phase } from '../plan.ts';
import { sh } from '../shell.ts';

/** A droplet that keeps its copies here, and its public key ("ssh-ed25519 AAAA…"). */
export interface BackupClient { name: string; publicKey: string }

const home = (sftp: SftpTarget) => `/home/${sftp.user}`;
const authorizedKeysPath = (sftp: SftpTarget) => `${home(sftp)}/.ssh/authorized_keys`;
const comment = (client: string) => `convex-ops-backup@${client}`;

/** The target's ed25519 host key, "ssh-ed25519 AAAA…", as the droplets will pin it. */
export const targetHostKey: Fact<string | undefined> = {
  key: 'ssh-host-ed25519',
  command: sh`cat /etc/ssh/ssh_host_ed25519_key.pub`,
  parse: out => out.trim().split(/\s+/).slice(0, 2).join(' ') || undefined,
};

/** `user home` of the user, or nothing. */
const userFact = (user: string): Fact<{ home: string } | undefined> => ({
  key: `passwd:${user}`,
  command: sh`getent passwd ${user}`,
  parse: out => {
    const fields = out.trim().split(':');
    return fields.length >= 6 ? { home: fields[5]! } : undefined;
  },
});

/** "owner mode" of a folder, or nothing. */
const folderFact = (path: string): Fact<string | undefined> => ({
  key: `folder:${path}`,
  command: sh`[ -d ${path} ] && stat -c '%U %a' ${path}`,
  parse: out => out.trim() || undefined,
});

export interface TargetFacts {
  user: { home: string } | undefined;
  sshDir: string | undefined;
  repository: string | undefined;
  authorizedKeys: FileState;
}

/** authorized_keys with each client's line (replacing an older line of that client), other lines kept. */
export function authorizedKeys(current: FileState, clients: BackupClient[]): string {
  const ours = new Set(clients.map(c => comment(c.name)));
  const kept = (current.kind === 'file' ? current.content.split('\n') : []).filter(line => line.trim() && !line.startsWith(`# ${MANAGED_MARKER}`) && !ours.has(line.trim().split(/\s+/).pop()!));
  const added = clients.map(c => `restrict,command="internal-sftp" ${c.publicKey} ${comment(c.name)}`);
  return [`# ${MANAGED_MARKER}: droplets' keys for their off-host backups, SFTP only.`, ...kept, ...added].join('\n') + '\n';
}

export function planBackupTarget(facts: TargetFacts, sftp: SftpTarget, clients: BackupClient[]): Change[] {
  const { user, path } = sftp;
  if (facts.user && facts.user.home !== home(sftp)) {
    throw new Error(`the user ${user} exists with the home folder ${facts.user.home}; convex-ops keeps its authorized_keys in ${home(sftp)}. Use another user in the repository URL. Nothing was changed.`);
  }
  const changes: Change[] = [];
  if (!facts.user) {
    // "*": no password can log in, yet the account is not "locked", which sshd would refuse.
    changes.push({ label: `create the user ${user} (SFTP only, no shell)`, script: sh`useradd --system --create-home --home-dir ${home(sftp)} --shell /usr/sbin/nologin --password '*' ${user}` });
  }
  if (facts.sshDir !== `${user} 700`) {
    changes.push({ label: `${home(sftp)}/.ssh (mode 700, ${user})`, script: sh`install -d -m 700 -o ${user} -g ${user} ${`${home(sftp)}/.ssh`}` });
  }
  if (facts.repository !== `${user} 700`) {
    changes.push({ label: `the repository folder ${path} (mode 700, ${user})`, script: sh`mkdir -p ${path} && chown ${user}: ${path} && chmod 700 ${path}` });
  }
  const content = authorizedKeys(facts.authorizedKeys, clients);
  changes.push(...fileChanges(facts.authorizedKeys, { path: authorizedKeysPath(sftp), content, mode: '600', owner: user, label: `${authorizedKeysPath(sftp)} (${clients.map(c => comment(c.name)).join(', ')}, SFTP only)` }));
  return changes;
}

/** The target for these clients, on the host the step runs on. */
export function backupTarget(sftp: SftpTarget, clients: BackupClient[]): Step {
  return {
    name: 'backup-target',
    phases: [
      phase({
        facts: (_host: Host) => ({
          user: userFact(sftp.user),
          sshDir: folderFact(`${home(sftp)}/.ssh`),
          repository: folderFact(sftp.path),
          authorizedKeys: fileFact(authorizedKeysPath(sftp)),
          hostKey: targetHostKey,
        }),
        plan: facts => planBackupTarget(facts, sftp, clients),
        ok: () => `${sftp.user} may use SFTP to ${sftp.path}, with the keys of ${clients.map(c => c.name).join(', ')}`,
      }),
    ],
  };
}
