import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fingerprint, knownKeysFor, verifyHostKey } from '../../scripts/lib/known-hosts.ts';

/** An ssh-ed25519 public key blob in SSH wire format. */
function ed25519Blob(): Buffer {
  const raw = generateKeyPairSync('ed25519').publicKey.export({ format: 'der', type: 'spki' }).subarray(-32);
  const withLength = (b: Buffer) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(b.length);
    return Buffer.concat([len, b]);
  };
  return Buffer.concat([withLength(Buffer.from('ssh-ed25519')), withLength(raw)]);
}

const dir = mkdtempSync(join(tmpdir(), 'known-hosts-'));
const key = ed25519Blob();
const other = ed25519Blob();
const line = (pattern: string, blob = key) => `${pattern} ssh-ed25519 ${blob.toString('base64')}`;
const hashed = (host: string) => {
  const salt = randomBytes(20);
  return `|1|${salt.toString('base64')}|${createHmac('sha1', salt).update(host).digest('base64')}`;
};

test('plain, hashed and [host]:port entries are found', () => {
  const file = join(dir, 'kh1');
  writeFileSync(file, ['# comment', line('10.0.0.1,dev.example.com'), line(hashed('10.0.0.2')), line('[10.0.0.3]:2222'), line('@revoked 10.0.0.4')].join('\n'));
  assert.equal(knownKeysFor(file, '10.0.0.1', 22).length, 1);
  assert.equal(knownKeysFor(file, '10.0.0.2', 22).length, 1);
  assert.equal(knownKeysFor(file, '10.0.0.3', 2222).length, 1);
  assert.equal(knownKeysFor(file, '10.0.0.3', 22).length, 0);
  assert.equal(knownKeysFor(file, '10.0.0.9', 22).length, 0);
});

test('a known key passes; a changed key fails with both fingerprints', () => {
  const file = join(dir, 'kh2');
  writeFileSync(file, line(hashed('10.0.0.1')) + '\n');
  verifyHostKey({ file, host: 'dev', address: '10.0.0.1', port: 22, acceptNew: false, presented: key });
  assert.throws(
    () => verifyHostKey({ file, host: 'dev', address: '10.0.0.1', port: 22, acceptNew: true, presented: other }),
    (e: Error) => e.message.includes('HOST KEY CHANGED for dev') && e.message.includes(fingerprint(key)) && e.message.includes(fingerprint(other)),
  );
});

test('an unknown host is refused unless --accept-new, which records it', () => {
  const file = join(dir, 'kh3');
  writeFileSync(file, '');
  assert.throws(() => verifyHostKey({ file, host: 'dev', address: '10.0.0.5', port: 2222, acceptNew: false, presented: key }), /unknown host key for dev \(\[10\.0\.0\.5\]:2222\).*--accept-new/);
  verifyHostKey({ file, host: 'dev', address: '10.0.0.5', port: 2222, acceptNew: true, presented: key });
  assert.equal(readFileSync(file, 'utf8'), line('[10.0.0.5]:2222') + '\n');
  verifyHostKey({ file, host: 'dev', address: '10.0.0.5', port: 2222, acceptNew: false, presented: key });
});
