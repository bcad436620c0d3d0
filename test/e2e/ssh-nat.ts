// A droplet as behind a NAT that forwards another port to its sshd on 22: the inventory says that
// port, so a firewall allows it, but the packets reach the firewall as port 22. That is how the
// e2e tests make a firewall's SSH probe fail for real, to see the run undo what it did.
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Fleet } from '../fleet/index.ts';

/** Adds the NAT rule and a known_hosts for `[ip]:port`; remove() takes the rule away again. */
export async function sshBehindNat(fleet: Fleet, droplet: string, port: number): Promise<{ knownHostsPath: string; remove(): Promise<void> }> {
  const rule = `-p tcp --dport ${port} -j REDIRECT --to-ports 22`;
  await fleet.exec(droplet, `iptables -t nat -A PREROUTING ${rule}`);
  const ip = fleet.droplets[droplet]!.ip;
  const knownHosts = (await fs.readFile(fleet.knownHostsPath, 'utf8')).replace(new RegExp(`^${ip.replace(/\./g, '\\.')} `, 'gm'), `[${ip}]:${port} `);
  const knownHostsPath = path.join(fleet.dir, `known_hosts_${port}`);
  await fs.writeFile(knownHostsPath, knownHosts);
  return { knownHostsPath, remove: async () => void (await fleet.exec(droplet, `iptables -t nat -D PREROUTING ${rule}`)) };
}
