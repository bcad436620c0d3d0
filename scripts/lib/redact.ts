// Every secret the tool learns (INSTANCE_SECRET, passwords, admin keys) is registered here the
// moment it is read or generated, and every line that leaves the process goes through redact().

const secrets = new Set<string>();
const MASK = '********';

export function registerSecret(value: string | undefined): void {
  if (!value || value.length < 6) return;
  secrets.add(value);
  secrets.add(encodeURIComponent(value));
}

export function redact(text: string): string {
  let out = text;
  // Longest first, so a secret that contains another is masked whole.
  for (const secret of [...secrets].sort((a, b) => b.length - a.length)) {
    out = out.split(secret).join(MASK);
  }
  return out;
}
