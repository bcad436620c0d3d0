// Strict host-key checking against an OpenSSH known_hosts file: plain and hashed (|1|salt|hash)
// host patterns, [host]:port entries and trust-on-first-use (--accept-new).
import { createHash, createHmac } from 'node:crypto';
import { appendFileSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname } from 'node:path';

export interface KnownKey { type: string; base64: string }

export class HostKeyError extends Error {}

/** The name under which OpenSSH records a host: "addr" on port 22, "[addr]:port" otherwise. */
export function hostPattern(address: string, port: number): string {
  return port === 22 ? address : `[${address}]:${port}`;
}

export function knownKeysFor(file: string, address: string, port: number): KnownKey[] {
  return entriesFor(file, address, port).filter(e => !e.marker).map(({ type, base64 }) => ({ type, base64 }));
}

/** Keys marked @revoked for this host: never accepted, whatever else the file says. */
export function revokedKeysFor(file: string, address: string, port: number): KnownKey[] {
  return entriesFor(file, address, port).filter(e => e.marker === '@revoked').map(({ type, base64 }) => ({ type, base64 }));
}

function entriesFor(file: string, address: string, port: number): Array<KnownKey & { marker?: string }> {
  if (!existsSync(file)) return [];
  const wanted = hostPattern(address, port);
  const keys: Array<KnownKey & { marker?: string }> = [];
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const fields = line.trim().split(/\s+/);
    if (fields.length < 3 || fields[0]!.startsWith('#')) continue;
    // A marker comes first: @revoked keys are collected to be refused; @cert-authority lines
    // name a CA, not a host key, and are not used.
    const marker = fields[0]!.startsWith('@') ? fields.shift() : undefined;
    if (marker && marker !== '@revoked') continue;
    if (fields.length < 3) continue;
    const [hosts, type, base64] = fields as [string, string, string];
    // As OpenSSH: the line applies when a pattern matches and no negated (!) pattern does.
    const patterns = hosts.split(',');
    const negated = patterns.filter(p => p.startsWith('!')).some(p => matches(p.slice(1), wanted));
    if (!negated && patterns.some(p => !p.startsWith('!') && matches(p, wanted))) keys.push({ type, base64, ...(marker ? { marker } : {}) });
  }
  return keys;
}

function matches(pattern: string, host: string): boolean {
  if (pattern.startsWith('|1|')) {
    const [, , salt, hash] = pattern.split('|');
    if (!salt || !hash) return false;
    return createHmac('sha1', Buffer.from(salt, 'base64')).update(host).digest('base64') === hash;
  }
  if (pattern.includes('*') || pattern.includes('?')) {
    const regex = new RegExp('^' + pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.') + '$');
    return regex.test(host);
  }
  return pattern === host;
}

export function fingerprint(keyBlob: Buffer): string {
  return 'SHA256:' + createHash('sha256').update(keyBlob).digest('base64').replace(/=+$/, '');
}

/** The key type is the first length-prefixed string of the SSH wire-format key blob. */
export function keyType(keyBlob: Buffer): string {
  const length = keyBlob.readUInt32BE(0);
  return keyBlob.subarray(4, 4 + length).toString('ascii');
}

/**
 * Decides whether to trust the key a server presented. Throws HostKeyError with both
 * fingerprints when the key changed, and with the fix when the host is unknown.
 */
export function verifyHostKey(opts: { file: string; host: string; address: string; port: number; acceptNew: boolean; presented: Buffer }): void {
  const known = knownKeysFor(opts.file, opts.address, opts.port);
  const presentedBase64 = opts.presented.toString('base64');
  const presented = fingerprint(opts.presented);
  if (revokedKeysFor(opts.file, opts.address, opts.port).some(k => k.base64 === presentedBase64)) {
    throw new HostKeyError(`REVOKED host key for ${opts.host} (${hostPattern(opts.address, opts.port)}): the server presented ${keyType(opts.presented)} ${presented}, which ${opts.file} marks @revoked. Do not connect until you know why.`);
  }
  if (known.some(k => k.base64 === presentedBase64)) return;
  const sameType = known.filter(k => k.type === keyType(opts.presented));
  if (known.length > 0) {
    const recorded = (sameType.length ? sameType : known).map(k => `${k.type} ${fingerprint(Buffer.from(k.base64, 'base64'))}`).join(', ');
    throw new HostKeyError(
      `HOST KEY CHANGED for ${opts.host} (${hostPattern(opts.address, opts.port)}): ${opts.file} has ${recorded}, the server presented ${keyType(opts.presented)} ${presented}. ` +
        `This may be a man-in-the-middle attack, or the droplet was rebuilt. If you know why, remove the old entry (ssh-keygen -R ${hostPattern(opts.address, opts.port)} -f ${opts.file}) and run with --accept-new.`,
    );
  }
  if (!opts.acceptNew) {
    throw new HostKeyError(
      `unknown host key for ${opts.host} (${hostPattern(opts.address, opts.port)}): ${keyType(opts.presented)} ${presented} is not in ${opts.file}. ` +
        `Check the fingerprint with your provider's console, then run again with --accept-new to record it.`,
    );
  }
  mkdirSync(dirname(opts.file), { recursive: true });
  appendFileSync(opts.file, `${hostPattern(opts.address, opts.port)} ${keyType(opts.presented)} ${presentedBase64}\n`, { mode: 0o600 });
}
