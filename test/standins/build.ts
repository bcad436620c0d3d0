// Builds the stand-in images for ghcr.io/get-convex/convex-backend and convex-dashboard
// (the real ones cannot be pulled here). One Dockerfile, two targets; the version and the
// behaviour are build arguments. Every image is labelled and tagged with a hash of this folder
// and of the base image, and a build is skipped when the tagged image already carries that hash.
// The hash is in the tag so that checkouts with different stand-ins, testing on one engine at
// once, never take each other's images.
import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const STANDIN_DIR = path.dirname(fileURLToPath(import.meta.url));

/** Backend tags and what each does (backend.py): `broken` fails its health check, `fragile`
 *  fails it only while /convex/data/FAIL_HERE exists, `fragile-v1` too but on v1's database
 *  version (it migrates nothing where v1 ran). */
export const BACKEND_VERSIONS = ['v1', 'v2', 'broken', 'fragile', 'fragile-v1'] as const;
export const DASHBOARD_VERSIONS = ['v1', 'v2'] as const;
export type BackendVersion = (typeof BACKEND_VERSIONS)[number];
export type DashboardVersion = (typeof DASHBOARD_VERSIONS)[number];

/** Local repository names; `push` gets the remote name without this prefix (`convex-backend:v1`). */
export const LOCAL_REPOSITORY_PREFIX = 'convex-ops-standin';
export const HASH_LABEL = 'dev.convex-ops.standin.hash';
export const REVISION_LABEL = 'org.opencontainers.image.revision';

/**
 * The fake git SHA in `org.opencontainers.image.revision` for a version. Backend and dashboard
 * of one version share it, as the real images of one commit do.
 */
export function standinRevision(version: string): string {
  return createHash('sha1').update(`convex-ops-standin:${version}`).digest('hex');
}

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

function docker(args: readonly string[], allowFail = false): Promise<Result> {
  return new Promise((resolve, reject) => {
    // DOCKER_BUILDKIT=0: the classic builder is present on every engine here (Debian's
    // docker.io ships no buildx) and resolves a local-only base image without a registry.
    const child = spawn('docker', args, { env: { ...process.env, DOCKER_BUILDKIT: '0' }, stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (chunk: Buffer) => out.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => err.push(chunk));
    child.on('error', reject);
    child.on('close', (code) => {
      const result = { code: code ?? 1, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') };
      if (result.code !== 0 && !allowFail) {
        const tail = `${result.stdout}\n${result.stderr}`.trim().split('\n').slice(-25).join('\n');
        reject(new Error(`docker ${args.join(' ')} exited with ${result.code}\n${tail}`));
      } else {
        resolve(result);
      }
    });
  });
}

/** Hash of every file in this folder (names and contents) plus the base image's id. */
async function contentHash(baseImageId: string): Promise<string> {
  const hash = createHash('sha256').update(`base ${baseImageId}\n`);
  const names = (await readdir(STANDIN_DIR, { withFileTypes: true }))
    .filter((entry) => entry.isFile())
    .map((entry) => entry.name)
    .sort();
  for (const name of names) {
    const data = await readFile(path.join(STANDIN_DIR, name));
    hash.update(`${name} ${data.length}\n`).update(data);
  }
  return hash.digest('hex').slice(0, 16);
}

async function labelOf(ref: string): Promise<string | undefined> {
  const inspected = await docker(['image', 'inspect', '--format', `{{ index .Config.Labels "${HASH_LABEL}" }}`, ref], true);
  return inspected.code === 0 ? inspected.stdout.trim() : undefined;
}

interface ImageSpec {
  kind: 'backend' | 'dashboard';
  version: string;
  buildArgs: Record<string, string>;
}

/**
 * Build (or reuse) the stand-in images and optionally push each one.
 *
 * Returns the local refs, e.g. `{ backend: { v1: 'convex-ops-standin/convex-backend:v1-<hash>', … },
 * dashboard: { v1: …, v2: … } }`. With `push`, calls `push(localRef, 'convex-backend:v1')` etc.
 * for every image, also when the build was skipped (a fresh registry still needs them).
 */
export async function buildStandinImages(opts: {
  baseImage: string;
  push?: (localRef: string, remoteRepoAndTag: string) => Promise<void>;
}): Promise<{ backend: Record<string, string>; dashboard: Record<string, string> }> {
  const base = await docker(['image', 'inspect', '--format', '{{.Id}}', opts.baseImage], true);
  if (base.code !== 0) {
    throw new Error(`stand-in base image ${opts.baseImage} is not in the local engine (build it first): ${base.stderr.trim()}`);
  }
  const hash = await contentHash(base.stdout.trim());
  const specs: ImageSpec[] = [
    ...BACKEND_VERSIONS.map((version): ImageSpec => ({ kind: 'backend', version, buildArgs: { BEHAVIOUR: version } })),
    ...DASHBOARD_VERSIONS.map((version): ImageSpec => ({ kind: 'dashboard', version, buildArgs: {} })),
  ];
  const refs: { backend: Record<string, string>; dashboard: Record<string, string> } = { backend: {}, dashboard: {} };
  // One at a time: the first build makes the shared apt layer, the rest reuse it from the cache.
  for (const spec of specs) {
    const repository = `convex-${spec.kind}`;
    const ref = `${LOCAL_REPOSITORY_PREFIX}/${repository}:${spec.version}-${hash}`;
    if ((await labelOf(ref)) !== hash) {
      const args: Record<string, string> = {
        BASE: opts.baseImage,
        VERSION: spec.version,
        REVISION: standinRevision(spec.version),
        CONTENT_HASH: hash,
        ...spec.buildArgs,
      };
      await docker([
        'build',
        '--target',
        spec.kind,
        ...Object.entries(args).flatMap(([key, value]) => ['--build-arg', `${key}=${value}`]),
        '--tag',
        ref,
        '--file',
        path.join(STANDIN_DIR, 'Dockerfile'),
        STANDIN_DIR,
      ]);
    }
    refs[spec.kind][spec.version] = ref;
  }
  if (opts.push) {
    for (const spec of specs) {
      await opts.push(refs[spec.kind][spec.version], `convex-${spec.kind}:${spec.version}`);
    }
  }
  return refs;
}
