import type { Check } from '../scripts/lib/check.ts';
import { sh } from '../scripts/lib/shell.ts';
import { envPath } from '../scripts/lib/steps/secret.ts';

/** .env holds the secrets: mode 0600, owned by root. */
export const envMode: Check = {
  name: 'env-mode',
  probe: host => sh`stat -c '%a %U' ${envPath(host)}`,
  verdict: (out, _code, host) => (out.trim() === '600 root' ? undefined : `${envPath(host)} is "${out.trim() || 'missing'}", not "600 root"`),
};
