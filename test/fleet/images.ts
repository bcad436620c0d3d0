// The fleet's images, built without any image registry and cached by a hash of their recipe:
// a tag `convex-ops-fleet/<kind>:<hash12>` exists exactly when that recipe was built, so a
// re-run finds it and takes no time, and a changed recipe gets a new tag.
//
//   base     debootstrap --variant=minbase <suite>, piped into `docker import` (bookworm; trixie
//            for the Debian 13 droplets)
//   droplet  base + openssh-server sudo curl ca-certificates iproute2 procps (nothing else:
//            PostgreSQL, nginx, certbot and Docker are for the product to install). Two flavours:
//            Debian 12 with sshd as PID 1, and Debian 13 booting systemd as real droplets do
//   registry base + Debian's docker-registry, with our own config (no auth)
//   pebble   base + Debian's pebble, with a generated HTTPS certificate and our config
import { createHash } from 'node:crypto';
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { cacheDir } from './paths.ts';
import { withLock } from './lock.ts';
import { docker, run } from './proc.ts';
import { ensureDockerEngine, ensureHostPackages } from './engine.ts';

const IMAGE_REPO = 'convex-ops-fleet';
/** The host's own suite: its apt sources name the mirrors, and the fleet's other images use it. */
const HOST_SUITE = 'bookworm';

/** A droplet's operating system and init: Debian 12 with sshd as PID 1, or Debian 13 booting systemd. */
export type DropletFlavour = 'debian12' | 'debian13-systemd';
const SUITE_OF: Record<DropletFlavour, string> = { debian12: 'bookworm', 'debian13-systemd': 'trixie' };

export interface FleetImages {
  base: string;
  droplet: string;
  registry: string;
  pebble: string;
}

/** Inside the pebble image; the CA file is copied out to each fleet's acme-ca.pem. */
export const PEBBLE_HTTPS_CA_PATH = '/etc/pebble/https-ca.pem';
export const PEBBLE_LISTEN_PORT = 14000;
export const PEBBLE_MANAGEMENT_PORT = 15000;
/** The DNS names pebble's own HTTPS certificate covers (we generate it: Debian ships none). */
export const PEBBLE_HTTPS_NAMES = ['pebble', 'pebble.test', 'localhost'];
export const REGISTRY_PORT = 5000;
export const FLEET_REGISTRY_HOST = `registry.test:${REGISTRY_PORT}`;

function hashOf(recipe: unknown): string {
  return createHash('sha256').update(JSON.stringify(recipe)).digest('hex').slice(0, 12);
}

async function imageExists(tag: string): Promise<boolean> {
  return (await docker(['image', 'inspect', '--format', '{{.Id}}', tag], { allowFail: true })).code === 0;
}

/** Build `tag` with `build` unless it exists; one builder per tag across processes. */
async function ensureImage(tag: string, build: () => Promise<void>): Promise<string> {
  if (await imageExists(tag)) return tag;
  return withLock(`image-${tag}`, async () => {
    if (await imageExists(tag)) return tag;
    const started = Date.now();
    process.stderr.write(`[fleet] building image ${tag}\n`);
    await build();
    process.stderr.write(`[fleet] built ${tag} in ${Math.round((Date.now() - started) / 1000)} s\n`);
    return tag;
  });
}

// ---------------------------------------------------------------------------------------------
// base

interface AptMirrors {
  debian: string;
  security: string;
}

/**
 * The Debian mirrors this machine's apt already uses (CI may sit behind a different one than
 * deb.debian.org). Reads one-line *.list and deb822 *.sources files.
 */
async function hostAptMirrors(): Promise<AptMirrors> {
  const found: AptMirrors = { debian: 'http://deb.debian.org/debian', security: 'http://deb.debian.org/debian-security' };
  const files = ['/etc/apt/sources.list'];
  const dir = '/etc/apt/sources.list.d';
  for (const name of await fs.readdir(dir).catch(() => [] as string[])) {
    if (name.endsWith('.list') || name.endsWith('.sources')) files.push(path.join(dir, name));
  }
  const entries: Array<{ uri: string; suites: string[] }> = [];
  for (const file of files) {
    const text = await fs.readFile(file, 'utf8').catch(() => '');
    if (file.endsWith('.sources')) {
      for (const stanza of text.split(/\n\s*\n/)) {
        const field = (key: string) => stanza.match(new RegExp(`^${key}:\\s*(.+)$`, 'mi'))?.[1].trim().split(/\s+/) ?? [];
        if (!field('Types').includes('deb') || field('Enabled')[0] === 'no') continue;
        for (const uri of field('URIs')) entries.push({ uri, suites: field('Suites') });
      }
    } else {
      for (const line of text.split('\n')) {
        const m = line.trim().match(/^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)/);
        if (m) entries.push({ uri: m[1], suites: [m[2]] });
      }
    }
  }
  const main = entries.find((e) => e.suites.includes(HOST_SUITE) && !e.uri.includes('security'));
  const security = entries.find((e) => e.suites.includes(`${HOST_SUITE}-security`));
  if (main) found.debian = main.uri.replace(/\/$/, '');
  if (security) found.security = security.uri.replace(/\/$/, '');
  return found;
}

/** The base image of a suite; the mirrors the host uses for bookworm serve every suite. */
export async function ensureBaseImage(suite = HOST_SUITE): Promise<string> {
  const mirrors = await hostAptMirrors();
  const sourcesList = [
    `deb ${mirrors.debian} ${suite} main`,
    `deb ${mirrors.debian} ${suite}-updates main`,
    `deb ${mirrors.security} ${suite}-security main`,
    '',
  ].join('\n');
  const recipe = { v: 1, suite, variant: 'minbase', mirror: mirrors.debian, sourcesList };
  const tag = `${IMAGE_REPO}/base:${hashOf(recipe)}`;
  return ensureImage(tag, async () => {
    await ensureHostPackages(); // debootstrap
    await fs.mkdir(cacheDir, { recursive: true });
    // mkdtemp: one process may build two suites at once (Debian 12 and 13), in the same millisecond.
    const rootfs = await fs.mkdtemp(path.join(cacheDir, 'rootfs-'));
    try {
      await run('debootstrap', ['--variant=minbase', suite, rootfs, mirrors.debian]);
      await fs.writeFile(path.join(rootfs, 'etc/apt/sources.list'), sourcesList);
      // Drop what debootstrap leaves behind that a droplet wouldn't have.
      await run('sh', ['-c', 'rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*', 'sh', rootfs]);
      await importRootfs(rootfs, tag);
    } finally {
      await fs.rm(rootfs, { recursive: true, force: true });
    }
  });
}

/** `tar -C rootfs -c . | docker import - tag`, failing if either side fails. */
async function importRootfs(rootfs: string, tag: string): Promise<void> {
  const tar = spawn('tar', ['--numeric-owner', '-C', rootfs, '-c', '.'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let tarError = '';
  tar.stderr.on('data', (chunk: Buffer) => (tarError += chunk.toString()));
  const tarExit = new Promise<number>((resolve) => tar.on('close', (code) => resolve(code ?? 1)));
  await docker(['import', '--change', 'CMD ["/bin/bash"]', '-', tag], { input: tar.stdout });
  const code = await tarExit;
  if (code !== 0) {
    await docker(['rmi', tag], { allowFail: true });
    throw new Error(`tar of ${rootfs} failed (${code}): ${tarError}`);
  }
}

// ---------------------------------------------------------------------------------------------
// images built with a Dockerfile on top of the base

async function ensureBuiltImage(kind: string, base: string, files: Record<string, string>): Promise<string> {
  const tag = `${IMAGE_REPO}/${kind}:${hashOf({ base, files })}`;
  return ensureImage(tag, async () => {
    await fs.mkdir(cacheDir, { recursive: true });
    const context = await fs.mkdtemp(path.join(cacheDir, `build-${kind}-`));
    try {
      for (const [name, text] of Object.entries(files)) {
        await fs.writeFile(path.join(context, name), text.replaceAll('@BASE@', base), { mode: 0o755 });
      }
      // The classic builder: Debian's docker.io has no BuildKit/buildx, and it resolves a
      // local-only FROM image without asking a registry.
      await docker(['build', '-t', tag, context], { env: { ...process.env, DOCKER_BUILDKIT: '0' } });
    } finally {
      await fs.rm(context, { recursive: true, force: true });
    }
  });
}

const APT_INSTALL = 'apt-get update && apt-get install -y --no-install-recommends';

/** What both droplet flavours share: a deploy user, the fleet registry trusted, the sshd config. */
const DROPLET_COMMON = `# A non-root user with passwordless sudo, for droplets configured with user = "deploy".
# '*' rather than useradd's locked '!' so that key login is allowed.
RUN useradd --create-home --shell /bin/bash --password '*' deploy \\
 && echo 'deploy ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/90-deploy && chmod 0440 /etc/sudoers.d/90-deploy
# Fleet set-up, not product: the droplets' Docker trusts the fleet registry (plain HTTP).
# docker.io ships no daemon.json, so installing it later keeps this file.
RUN mkdir -p /etc/docker && echo '{"insecure-registries":["${FLEET_REGISTRY_HOST}"]}' > /etc/docker/daemon.json
COPY sshd-fleet.conf /etc/ssh/sshd_config.d/fleet.conf
`;

const DROPLET_PACKAGES = 'openssh-server sudo curl ca-certificates iproute2 procps';

const SSHD_FLEET_CONF = `PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
`;

/** Puts the fleet's public key ($1) in root's and deploy's authorized_keys. */
const INSTALL_FLEET_KEY = `for user in root deploy; do
  home=$(getent passwd "$user" | cut -d: -f6)
  install -d -m 700 -o "$user" -g "$user" "$home/.ssh"
  printf '%s\\n' "$1" > "$home/.ssh/authorized_keys"
  chown "$user:$user" "$home/.ssh/authorized_keys"
  chmod 600 "$home/.ssh/authorized_keys"
done`;

const DROPLET_FILES: Record<string, string> = {
  Dockerfile: `FROM @BASE@
ARG DEBIAN_FRONTEND=noninteractive
# The package lists are kept, as on a real droplet; the product still runs apt-get update.
RUN ${APT_INSTALL} ${DROPLET_PACKAGES} \\
 && apt-get clean \\
 && rm -f /etc/ssh/ssh_host_*
${DROPLET_COMMON}# Fleet set-up, not product: see fleet-dpkg-fixups.
COPY fleet-dpkg-fixups /usr/local/sbin/fleet-dpkg-fixups
RUN echo 'DPkg::Post-Invoke { "/usr/local/sbin/fleet-dpkg-fixups || true"; };' > /etc/apt/apt.conf.d/99convex-ops-fleet
COPY droplet-entrypoint /usr/local/sbin/droplet-entrypoint
ENTRYPOINT ["/usr/local/sbin/droplet-entrypoint"]
`,
  'sshd-fleet.conf': SSHD_FLEET_CONF,
  // The test hosts lack CAP_SYS_RESOURCE (which is also why --privileged fails), so nothing in a
  // droplet can raise a hard resource limit. docker.io's init script starts with
  // `ulimit -n 1048576` under `set -e` and so would never start dockerd here, while on a real
  // droplet it works. After every dpkg run (apt's hook), make those lines tolerate failure.
  'fleet-dpkg-fixups': `#!/bin/sh
if [ -f /etc/init.d/docker ]; then
  sed -i -E 's/^([[:space:]]*ulimit -[nup] [0-9a-z]+)$/\\1 || true/' /etc/init.d/docker
fi
`,
  'droplet-entrypoint': `#!/bin/sh
# sshd is the main process: there is no systemd on a droplet of this flavour.
set -e
mkdir -p /run/sshd
# Host keys are made at first start, so every droplet has its own.
ssh-keygen -A
# The fleet's public key, for root and deploy alike.
if [ -n "$FLEET_AUTHORIZED_KEY" ]; then
  set -- "$FLEET_AUTHORIZED_KEY"
  ${INSTALL_FLEET_KEY.replaceAll('\n', '\n  ')}
fi
exec /usr/sbin/sshd -D -e
`,
};

/**
 * Debian 13 booting systemd, as a real droplet does: /sbin/init is the main process and stops on
 * SIGRTMIN+3, so `docker restart` is a reboot. What cloud-init does on a real droplet, a oneshot
 * unit ordered before ssh does here at every boot: host keys when missing (a test may delete
 * them), and the fleet's key from PID 1's environment (units do not inherit it). libpam-systemd,
 * as Debian's cloud images have it: each SSH login is a logind session, and root's first one starts
 * root's user manager (the bench measures what that costs).
 */
const SYSTEMD_DROPLET_FILES: Record<string, string> = {
  Dockerfile: `FROM @BASE@
ARG DEBIAN_FRONTEND=noninteractive
RUN ${APT_INSTALL} systemd systemd-sysv dbus libpam-systemd ${DROPLET_PACKAGES} \\
 && apt-get clean \\
 && rm -f /etc/ssh/ssh_host_*
${DROPLET_COMMON}COPY fleet-firstboot /usr/local/sbin/fleet-firstboot
COPY fleet-firstboot.service /etc/systemd/system/fleet-firstboot.service
RUN systemctl enable fleet-firstboot.service ssh.service
STOPSIGNAL SIGRTMIN+3
CMD ["/sbin/init"]
`,
  'sshd-fleet.conf': SSHD_FLEET_CONF,
  'fleet-firstboot': `#!/bin/sh
set -e
ssh-keygen -A
key=$(tr '\\0' '\\n' < /proc/1/environ | sed -n 's/^FLEET_AUTHORIZED_KEY=//p')
if [ -n "$key" ]; then
  set -- "$key"
  ${INSTALL_FLEET_KEY.replaceAll('\n', '\n  ')}
fi
`,
  'fleet-firstboot.service': `[Unit]
Description=convex-ops fleet: host keys and the fleet's SSH key (cloud-init's part on a real droplet)
Before=ssh.service
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/fleet-firstboot
[Install]
WantedBy=multi-user.target
`,
};

const REGISTRY_FILES: Record<string, string> = {
  Dockerfile: `FROM @BASE@
ARG DEBIAN_FRONTEND=noninteractive
RUN ${APT_INSTALL} docker-registry && apt-get clean && rm -rf /var/lib/apt/lists/*
# Debian's own config demands htpasswd auth; the fleet registry has none.
COPY registry.yml /etc/docker/registry/fleet.yml
EXPOSE ${REGISTRY_PORT}
CMD ["/usr/bin/docker-registry", "serve", "/etc/docker/registry/fleet.yml"]
`,
  'registry.yml': `version: 0.1
log:
  level: info
  fields:
    service: registry
storage:
  filesystem:
    rootdirectory: /var/lib/docker-registry
  delete:
    enabled: true
http:
  addr: :${REGISTRY_PORT}
`,
};

const PEBBLE_FILES: Record<string, string> = {
  Dockerfile: `FROM @BASE@
ARG DEBIAN_FRONTEND=noninteractive
RUN ${APT_INSTALL} pebble openssl && apt-get clean && rm -rf /var/lib/apt/lists/*
COPY pebble-config.json /etc/pebble/pebble-config.json
COPY make-https-cert /usr/local/sbin/make-https-cert
RUN /usr/local/sbin/make-https-cert
# No sleeping before validations, and no random bad-nonce rejections: tests want speed and
# determinism, not pebble's client-robustness exercises.
ENV PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0
EXPOSE ${PEBBLE_LISTEN_PORT} ${PEBBLE_MANAGEMENT_PORT}
# 127.0.0.11 is Docker's embedded DNS on a user-defined network: it resolves the droplets'
# aliases (api.dev.test, ...), so HTTP-01 validation reaches the droplet that asked.
CMD ["/usr/bin/pebble", "-config", "/etc/pebble/pebble-config.json", "-dnsserver", "127.0.0.11:53"]
`,
  // Pebble's defaults are httpPort 5002 / tlsPort 5001; a real CA validates on 80 and 443.
  'pebble-config.json': `${JSON.stringify(
    {
      pebble: {
        listenAddress: `0.0.0.0:${PEBBLE_LISTEN_PORT}`,
        managementListenAddress: `0.0.0.0:${PEBBLE_MANAGEMENT_PORT}`,
        certificate: '/etc/pebble/https-cert.pem',
        privateKey: '/etc/pebble/https-key.pem',
        httpPort: 80,
        tlsPort: 443,
        ocspResponderURL: '',
        externalAccountBindingRequired: false,
      },
    },
    null,
    2,
  )}\n`,
  // Debian's pebble package ships no certificate for its own HTTPS API (upstream's test/certs
  // are not packaged), so the image makes a small CA and a server certificate for the names
  // the fleet uses.
  'make-https-cert': `#!/bin/sh
set -e
cd /etc/pebble
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \\
  -subj '/CN=convex-ops fleet pebble HTTPS CA' -keyout https-ca-key.pem -out ${PEBBLE_HTTPS_CA_PATH} \\
  -addext 'basicConstraints=critical,CA:TRUE' -addext 'keyUsage=critical,keyCertSign,cRLSign'
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj '/CN=pebble' \\
  -keyout https-key.pem -out https-cert.csr
cat > https-cert.ext <<EXT
subjectAltName=${PEBBLE_HTTPS_NAMES.map((n) => `DNS:${n}`).join(',')},IP:127.0.0.1
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
EXT
openssl x509 -req -in https-cert.csr -CA ${PEBBLE_HTTPS_CA_PATH} -CAkey https-ca-key.pem -CAcreateserial \\
  -days 3650 -extfile https-cert.ext -out https-cert.pem
rm -f https-cert.csr https-cert.ext https-ca-key.pem
`,
};

/** The droplet image of a flavour, built on that flavour's base. */
export async function ensureDropletImage(flavour: DropletFlavour = 'debian12'): Promise<string> {
  const base = await ensureBaseImage(SUITE_OF[flavour]);
  return flavour === 'debian12' ? ensureBuiltImage('droplet', base, DROPLET_FILES) : ensureBuiltImage(`droplet-${flavour}`, base, SYSTEMD_DROPLET_FILES);
}
export const ensureRegistryImage = (base: string) => ensureBuiltImage('registry', base, REGISTRY_FILES);
export const ensurePebbleImage = (base: string) => ensureBuiltImage('pebble', base, PEBBLE_FILES);

/** Every fleet image, built in parallel once the base exists. */
export async function ensureFleetImages(): Promise<FleetImages> {
  await ensureDockerEngine();
  const base = await ensureBaseImage();
  const [droplet, registry, pebble] = await Promise.all([
    ensureDropletImage(),
    ensureRegistryImage(base),
    ensurePebbleImage(base),
  ]);
  return { base, droplet, registry, pebble };
}
