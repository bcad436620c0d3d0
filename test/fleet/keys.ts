// SSH access to the droplets, as to a real droplet: one fresh ed25519 key pair per fleet,
// and the droplets' own host keys in the fleet's known_hosts file.
import fs from 'node:fs/promises';
import path from 'node:path';
import { GiveUp, commandExists, docker, run, waitFor } from './proc.ts';

export interface FleetKey {
  identityPath: string;
  publicKey: string;
}

/**
 * A new key pair at <dir>/id_ed25519. ssh-keygen of the host when it has one, else the one in
 * the droplet image (a fresh CI machine may have no OpenSSH client).
 */
export async function generateFleetKey(dir: string, comment: string, dropletImage: string): Promise<FleetKey> {
  const identityPath = path.join(dir, 'id_ed25519');
  await fs.rm(identityPath, { force: true });
  await fs.rm(`${identityPath}.pub`, { force: true });
  const keygenArgs = ['-q', '-t', 'ed25519', '-N', '', '-C', comment];
  if (await commandExists('ssh-keygen')) {
    await run('ssh-keygen', [...keygenArgs, '-f', identityPath]);
  } else {
    const owner = `${process.getuid?.() ?? 0}:${process.getgid?.() ?? 0}`;
    await docker(['run', '--rm', '--user', owner, '-v', `${dir}:/keys`, '--entrypoint', 'ssh-keygen', dropletImage, ...keygenArgs, '-f', '/keys/id_ed25519']);
  }
  await fs.chmod(identityPath, 0o600);
  const publicKey = (await fs.readFile(`${identityPath}.pub`, 'utf8')).trim();
  return { identityPath, publicKey };
}

/** A droplet's host public keys ("ssh-ed25519 AAAA..."), ed25519 first, once sshd made them. */
export async function readHostKeys(container: string, timeoutMs = 120_000): Promise<string[]> {
  // ssh-keygen -A makes RSA, ECDSA, then ED25519 (each written whole), so all three exist once
  // the ED25519 one does.
  const script = 'test -s /etc/ssh/ssh_host_ed25519_key.pub && cat /etc/ssh/ssh_host_ed25519_key.pub /etc/ssh/ssh_host_ecdsa_key.pub /etc/ssh/ssh_host_rsa_key.pub';
  return waitFor(`host keys of ${container}`, timeoutMs, async () => {
    const result = await docker(['exec', container, 'sh', '-c', script], { allowFail: true });
    if (result.code !== 0) {
      await failIfExited(container);
      return undefined;
    }
    // Drop the comment (root@<hostname>): known_hosts lines are "<host> <type> <key>".
    return result.stdout
      .split('\n')
      .map((line) => line.trim().split(/\s+/).slice(0, 2).join(' '))
      .filter((line) => line.length > 0);
  });
}

/** OpenSSH known_hosts text: one "<ip> <type> <base64>" line per host key. */
export function knownHostsText(hosts: Array<{ address: string; hostKeys: string[] }>): string {
  return hosts.flatMap((host) => host.hostKeys.map((key) => `${host.address} ${key}\n`)).join('');
}

/** Stop waiting for a container that has exited, with the end of its log. */
export async function failIfExited(container: string): Promise<void> {
  const state = await docker(['inspect', '--format', '{{.State.Status}} {{.State.ExitCode}}', container], { allowFail: true });
  const status = state.stdout.trim();
  if (state.code === 0 && status.startsWith('running')) return;
  const logs = await docker(['logs', '--tail', '20', container], { allowFail: true });
  throw new GiveUp(`${container} is not running (${status || state.stderr.trim()}):\n${logs.stdout}${logs.stderr}`);
}
