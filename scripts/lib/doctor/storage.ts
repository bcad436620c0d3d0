// S3 storage as the backend meets it: the errors it logs when a bucket, the credentials, the
// endpoint or its certificate is wrong, each with the inventory key that fixes it.
import type { Host } from '../inventory.ts';
import { Findings, run } from './rule.ts';
import type { Context, Finding } from './rule.ts';
import type { DoctorState } from './facts.ts';

export function s3Storage(host: Host, _state: DoctorState, context: Context): Finding[] {
  const found = new Findings(context.found);
  const { logged, says } = context;
  const at = `hosts.${host.name}.storage`;
  const endpoint = host.storage?.mode === 's3' ? host.storage.endpoint ?? 'AWS' : 'the S3 endpoint';
  if (logged.has('s3-bucket-missing')) {
    found.add('s3-bucket-missing', 'problem', `a bucket the backend uses does not exist at ${endpoint}${says('s3-bucket-missing')}`, `create the buckets named in ${at} (or fix their names), then ${run(host, 'install')}: its storage step checks every bucket before the backend starts`);
  }
  if (logged.has('s3-access-denied')) {
    found.add('s3-access-denied', 'problem', `S3 refuses the backend's credentials or denies it the bucket${says('s3-access-denied')}`, `check the keys in the variables named by ${at}.access_key_env and secret_key_env, and that the bucket policy allows get, put, delete and list; then ${run(host, 'install')}`);
  }
  if (logged.has('s3-tls')) {
    found.add('s3-tls', 'problem', `the backend cannot verify the TLS certificate of ${endpoint}${says('s3-tls')}`, `a private endpoint needs a certificate from a public CA (the backend trusts only the system's roots); or fix ${at}.endpoint if it names the wrong host`);
  }
  if (logged.has('s3-endpoint')) {
    found.add('s3-endpoint', 'problem', `the backend cannot reach ${endpoint}${says('s3-endpoint')}`, `fix ${at}.endpoint (scheme, host and port as the droplet reaches them), then ${run(host, 'install')}`);
  }
  return found.list();
}
