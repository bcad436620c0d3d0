// The backup script's rotation, run with sh on a folder of fake backups: no host involved.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Host } from '../../scripts/lib/inventory.ts';
import { renderBackupScript } from '../../scripts/lib/steps/backup.ts';

const host: Host = {
  name: 'p', address: 'a', port: 22, user: 'root', known_hosts: '/k', volume: '/v', root: '/r', instance_name: 'x', backend_image: 'r/b:1', dashboard_image: 'r/d:1',
  bind_address: '0.0.0.0', dashboard_allow: [], firewall: false, acme: { directory: 'https://acme' }, postgres: { mode: 'local', user: 'convex' }, backup: { keep: 2 },
};

test('rotation never deletes the backup just made, even when the clock was behind and its id sorts first', () => {
  const script = renderBackupScript(host);
  const functions = script.slice(script.indexOf('is_good() {'), script.indexOf('run() {'));
  const backups = mkdtempSync(join(tmpdir(), 'rotation-'));
  const ids = ['20261201T000000Z', '20261202T000000Z', '20261203T000000Z'];
  const justMade = '20261101T000000Z';
  for (const id of [...ids, justMade]) {
    mkdirSync(join(backups, id));
    writeFileSync(join(backups, id, 'SHA256SUMS'), '');
  }
  const out = execFileSync('sh', ['-c', `${functions}\nBACKUPS=$1 KEEP=2 rotate "$2"`, 'sh', backups, justMade], { encoding: 'utf8' });
  assert.equal(out, 'ROTATED 20261201T000000Z\nROTATED 20261202T000000Z\n');
  assert.deepEqual(readdirSync(backups).sort(), [justMade, '20261203T000000Z']);
});
