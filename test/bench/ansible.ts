// Ansible side by side (issue 21): test/bench/ansible/install.yml does what install.ts does, on a
// twin droplet of the bench fleet. Both are converged first; then their no-op runs alternate, so
// that the machine's load touches both alike, and the wall time and the droplet's CPU of each run
// are recorded. Ansible is Debian's package (2.14, with its collections); the twin gets python3,
// which Ansible's modules need, through Ansible's own `raw` module, as an Ansible user does.
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import type { Fleet } from '../fleet/index.ts';
import type { DropletFlavour } from '../fleet/images.ts';
import { commandExists, run } from '../fleet/proc.ts';
import { installHostPackages } from '../fleet/engine.ts';
import { repoRoot } from '../fleet/paths.ts';

const PLAYBOOK_DIR = path.join(repoRoot, 'test', 'bench', 'ansible');

export interface AnsibleTwin {
  /** Runs the playbook; resolves with what its recap says and how long it took. */
  play: () => Promise<{ changed: number; failed: number; seconds: number; output: string }>;
  version: string;
}

/** Makes sure `ansible-playbook` is here (Debian's `ansible`), as the bench's one extra package. */
export async function ensureAnsible(): Promise<string> {
  if (!(await commandExists('ansible-playbook'))) await installHostPackages(['ansible']);
  return execFileSync('ansible', ['--version'], { encoding: 'utf8' }).split('\n')[0]!;
}

/** What differs between the droplet flavours, as install.yml's host variables. */
const FLAVOUR_VARS: Record<DropletFlavour, string> = {
  debian12: 'postgresql_version=15 docker_tasks=modules',
  'debian13-systemd': 'postgresql_version=17 docker_tasks=cli',
};

/** The twin droplet as Ansible's inventory, python3 on it, and a playbook run until it changes nothing. */
export async function prepareTwin(fleet: Fleet, name: string, flavour: DropletFlavour): Promise<AnsibleTwin> {
  const version = await ensureAnsible();
  const droplet = fleet.droplets[name]!;
  const images = fleet.inventory.defaults as { backend_image: string; dashboard_image: string };
  const hosts = path.join(fleet.dir, 'ansible-hosts.ini');
  const ssh = `-o UserKnownHostsFile=${fleet.knownHostsPath} -o StrictHostKeyChecking=yes`;
  writeFileSync(
    hosts,
    `[convex]\n${name} ansible_host=${droplet.ip} ansible_user=root ansible_ssh_private_key_file=${fleet.identityPath} ansible_ssh_common_args='${ssh}' ` +
      `volume=/mnt/convex_${name} instance_name=convex-self-hosted backend_image=${images.backend_image} dashboard_image=${images.dashboard_image} ${FLAVOUR_VARS[flavour]}\n`,
  );
  const env = { ...process.env, ANSIBLE_CONFIG: path.join(PLAYBOOK_DIR, 'ansible.cfg'), ANSIBLE_NOCOLOR: '1' };
  await run('ansible', ['-i', hosts, 'convex', '-m', 'raw', '-a', 'command -v python3 || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3)'], { env });
  const play = async () => {
    const started = performance.now();
    const result = await run('ansible-playbook', ['-i', hosts, path.join(PLAYBOOK_DIR, 'install.yml')], { env, allowFail: true });
    const recap = new RegExp(`^${name}\\s*:.*changed=(\\d+).*failed=(\\d+)`, 'm').exec(result.stdout);
    if (!recap) throw new Error(`ansible-playbook printed no recap (exit ${result.code}):\n${result.stdout.slice(-3000)}${result.stderr.slice(-2000)}`);
    return { changed: Number(recap[1]), failed: Number(recap[2]), seconds: (performance.now() - started) / 1000, output: result.stdout };
  };
  for (let attempt = 1; ; attempt++) {
    process.stderr.write(`[bench] converging ${name}, the twin, with ansible-playbook (attempt ${attempt})\n`);
    const converge = await play();
    if (converge.failed) throw new Error(`ansible-playbook failed on ${name}:\n${converge.output.slice(-3000)}`);
    if (converge.changed === 0) break;
    if (attempt === 3) throw new Error(`ansible-playbook still changes ${converge.changed} task(s) on its third run`);
  }
  return { play, version };
}
