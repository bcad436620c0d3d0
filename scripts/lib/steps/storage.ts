// [storage] mode = "s3" on the droplet, between the .env write and the compose file: every bucket
// is proven before the backend is started with it: it exists, and a put and a delete work with
// the credentials in .env. Nothing of this changes the host; the probe object is deleted at once.
// (A switch between local and S3 storage is refused earlier, by the secret step, with
// storageSwitchRefusal in ../storage.ts.)
import type { Host } from '../inventory.ts';
import type { Fact, Step } from '../step.ts';
import { phase } from '../plan.ts';
import { lines, sh } from '../shell.ts';
import { BUCKETS, CREDENTIAL_ENV_KEYS } from '../storage.ts';
import type { BucketKey, S3Storage } from '../storage.ts';
import { envPath } from './secret.ts';

/** The object the probe writes and deletes in each bucket. */
export const PROBE_KEY = 'convex-ops-probe';

/** Where a bucket is reached: path style (endpoint/bucket/) or virtual-hosted (bucket.endpoint/). */
export function bucketUrl(storage: S3Storage, bucket: string): string {
  const endpoint = new URL(storage.endpoint ?? `https://s3.${storage.region}.amazonaws.com`);
  if (storage.force_path_style) return `${endpoint.origin}/${bucket}/`;
  return `${endpoint.protocol}//${bucket}.${endpoint.host}/`;
}

export interface BucketProbe { bucket: string; stage: 'credentials' | 'exists' | 'put' | 'delete' | 'ok'; status: string; detail: string }

/**
 * For each bucket: HEAD it, PUT the probe object, DELETE it, stopping at the first failure. The
 * credentials are read from .env on the droplet and given to curl on its stdin (`-K -`), never
 * on a command line. A line per bucket: "<bucket> <stage> <HTTP status> <curl error or S3 code>".
 */
export function bucketProbeFact(host: Host, storage: S3Storage): Fact<BucketProbe[]> {
  const buckets = Object.keys(BUCKETS).map(key => storage.buckets[key as BucketKey]);
  return {
    key: `s3-buckets:${host.name}`,
    waits: true,
    command: lines(
      sh`ak=$(sed -n ${`s/^${CREDENTIAL_ENV_KEYS.access}=//p`} ${envPath(host)} 2>/dev/null); sk=$(sed -n ${`s/^${CREDENTIAL_ENV_KEYS.secret}=//p`} ${envPath(host)} 2>/dev/null)`,
      sh`d=$(mktemp -d); trap 'rm -rf "$d"' EXIT`,
      sh`s3() { printf 'user = "%s:%s"\\n' "$ak" "$sk" | curl -sS --max-time 15 -o "$d/body" -w '%{http_code} %{errormsg}' -K - --aws-sigv4 ${`aws:amz:${storage.region}:s3`} -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' "$@" 2>/dev/null; }`,
      sh`say() { printf '%s %s %s %s\\n' "$1" "$2" "\${3%% *}" "$(sed -n 's/.*<Code>\\([^<]*\\)<\\/Code>.*/\\1/p' "$d/body" 2>/dev/null | head -n 1)\${3#* }"; }`,
      ...buckets.map(
        bucket => sh`url=${bucketUrl(storage, bucket)}; if [ -z "$ak" ] || [ -z "$sk" ]; then echo ${bucket} credentials 0; \
elif r=$(s3 -I "$url"); [ "\${r%% *}" != 200 ]; then say ${bucket} exists "$r"; \
elif r=$(s3 -X PUT --data-binary probe "$url"${PROBE_KEY}); [ "\${r%% *}" != 200 ]; then say ${bucket} put "$r"; \
elif r=$(s3 -X DELETE "$url"${PROBE_KEY}); [ "\${r%% *}" != 204 ] && [ "\${r%% *}" != 200 ]; then say ${bucket} delete "$r"; \
else echo ${bucket} ok 200; fi`,
      ),
    ),
    parse: out =>
      out.split('\n').filter(Boolean).map(line => {
        const [bucket = '', stage = '', status = '', ...detail] = line.split(' ');
        return { bucket, stage: stage as BucketProbe['stage'], status, detail: detail.join(' ').trim() };
      }),
  };
}

/** What a failed probe means, and what to do about it. */
export function probeProblem(host: Host, probe: BucketProbe): string {
  const what = `bucket ${probe.bucket}`;
  if (probe.stage === 'credentials') return `${what}: no S3 credentials in ${envPath(host)} yet; the secret step writes them from hosts.${host.name}.storage.access_key_env and secret_key_env.`;
  if (probe.status === '000') return `${what}: the endpoint cannot be reached (${probe.detail || 'no answer'}). Check hosts.${host.name}.storage.endpoint${/SSL|TLS|certificate/i.test(probe.detail) ? '; for a private endpoint its certificate must be trusted by the droplet' : ''}.`;
  if (probe.stage === 'exists' && probe.status === '404') return `${what} does not exist. Create it (with your provider's console or CLI), or fix its name in hosts.${host.name}.storage.`;
  if (probe.status === '403') return `${what}: access denied for the ${probe.stage === 'exists' ? 'bucket' : probe.stage} (${probe.detail || 'HTTP 403'}). Check the credentials in ${s3Of(host).access_key_env} and ${s3Of(host).secret_key_env}, and the bucket's policy.`;
  return `${what}: the ${probe.stage === 'exists' ? 'bucket check' : `${probe.stage} of a probe object`} failed (HTTP ${probe.status}${probe.detail ? `, ${probe.detail}` : ''}).`;
}

/** The step runs only for hosts in S3 mode (runbooks.ts). */
function s3Of(host: Host): S3Storage {
  if (host.storage?.mode !== 's3') throw new Error(`hosts.${host.name}: the storage step is for [storage] mode = "s3" only.`);
  return host.storage;
}

export const storage: Step = {
  name: 'storage',
  phases: [
    phase({
      facts: (host: Host) => ({ buckets: bucketProbeFact(host, s3Of(host)) }),
      plan: ({ buckets }, host) => {
        // No credentials in .env yet: a dry run before the secret step has written them (a real
        // run reads the host again after that write). Nothing can be proven, nothing is started.
        if (buckets.every(probe => probe.stage === 'credentials')) return [];
        const failed = buckets.filter(probe => probe.stage !== 'ok');
        if (failed.length) throw new Error(`the S3 buckets are not ready, so the backend is not started with them:\n${failed.map(probe => `  - ${probeProblem(host, probe)}`).join('\n')}`);
        return [];
      },
      ok: ({ buckets }, host) =>
        buckets.every(probe => probe.stage === 'credentials')
          ? `the buckets are checked once ${envPath(host)} holds the S3 credentials`
          : `${Object.keys(BUCKETS).length} buckets exist at ${s3Of(host).endpoint ?? 'AWS'}, put and delete work`,
    }),
  ],
};
