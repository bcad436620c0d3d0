// After a promotion the inventory must say what prod now runs, or the next plain run would put
// the old images back. This pins a host's images in its own [hosts.NAME] table by editing the
// text (comments, order and formatting are kept), then proves the edit: the new file must load,
// and every host must come out exactly as before except for the two image references. Only
// then does it replace the file, atomically. Anything it cannot do safely, it leaves to the
// operator with the lines to add.
import { readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { loadInventory } from '../inventory.ts';
import type { Host } from '../inventory.ts';
import { unifiedDiff } from '../files.ts';

export interface PinnedImages { backend_image: string; dashboard_image: string }

export type PinResult = { ok: true; diff: string } | { ok: false; reason: string; lines: string };

const tableHeader = (name: string) => new RegExp(`^\\s*\\[\\s*hosts\\s*\\.\\s*(?:${name}|"${name}"|'${name}')\\s*\\]\\s*(?:#.*)?$`);
const anyHeader = /^\s*\[/;
const keyLine = (key: string) => new RegExp(`^\\s*${key}\\s*=`);
const PIN_COMMENT = '# promoted';

/** The text with the host's images pinned, or why that cannot be done by a plain edit. */
export function withPinnedImages(text: string, hostName: string, images: PinnedImages, comment: string): string | { reason: string } {
  const lines = text.split('\n');
  const start = lines.findIndex(l => tableHeader(hostName).test(l));
  if (start < 0) return { reason: `there is no [hosts.${hostName}] table header to edit` };
  let end = lines.findIndex((l, i) => i > start && anyHeader.test(l));
  if (end < 0) end = lines.length;
  const keys = ['backend_image', 'dashboard_image'] as const;
  const find = (key: string) => lines.findIndex((l, i) => i > start && i < end && keyLine(key).test(l));
  const line = (key: (typeof keys)[number]) => `${key} = ${JSON.stringify(images[key])}`;
  // Keys the table already has are replaced where they are, under one fresh comment.
  const present = keys.filter(k => find(k) >= 0);
  for (const key of present) lines[find(key)] = line(key);
  if (present.length) {
    const first = Math.min(...present.map(find));
    if (lines[first - 1]?.trim().startsWith(PIN_COMMENT) && first - 1 > start) lines[first - 1] = comment;
    else {
      lines.splice(first, 0, comment);
      end++;
    }
  }
  // The others go after the table's last key, before the blank lines that end it.
  const missing = keys.filter(k => !present.includes(k));
  if (missing.length) {
    let insert = end;
    while (insert - 1 > start && lines[insert - 1]!.trim() === '') insert--;
    lines.splice(insert, 0, comment, ...missing.map(line));
  }
  return lines.join('\n');
}

function comparable(host: Host, images?: PinnedImages): string {
  return JSON.stringify({ ...host, ...(images ?? {}) });
}

export function pinHostImages(path: string, hostName: string, images: PinnedImages, comment: string): PinResult {
  const lines = `[hosts.${hostName}]\n${comment}\nbackend_image = ${JSON.stringify(images.backend_image)}\ndashboard_image = ${JSON.stringify(images.dashboard_image)}`;
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    return { ok: false, reason: `cannot read ${path}: ${(error as Error).message}`, lines };
  }
  const edited = withPinnedImages(text, hostName, images, comment);
  if (typeof edited !== 'string') return { ok: false, reason: edited.reason, lines };
  const tmp = `${path}.convex-ops-${process.pid}.tmp`;
  try {
    writeFileSync(tmp, edited, { mode: statSync(path).mode & 0o777 });
    // The run validated the names already (with its --allow-unknown-env); this compares only.
    const before = loadInventory(path, { allowUnknownEnv: true });
    const after = loadInventory(tmp, { allowUnknownEnv: true });
    const same =
      before.hosts.size === after.hosts.size &&
      [...before.hosts].every(([name, host]) => {
        const other = after.hosts.get(name);
        return other !== undefined && comparable(other) === comparable(host, name === hostName ? images : undefined);
      });
    if (!same) {
      rmSync(tmp, { force: true });
      return { ok: false, reason: 'the edited inventory would have changed more than the two image references', lines };
    }
    renameSync(tmp, path);
  } catch (error) {
    rmSync(tmp, { force: true });
    return { ok: false, reason: (error as Error).message.split('\n')[0]!, lines };
  }
  return { ok: true, diff: unifiedDiff(path, text, edited) };
}

/** What became of the inventory after a promotion, for the record and the summary. */
export interface InventoryUpdate { updated: boolean; detail: string }

/**
 * Pins the promoted digests in the target's table, under a comment naming where they came from;
 * with keep (--keep-inventory), or when the edit is not safe, says which lines to add instead.
 */
export function pinPromotedImages(opts: { path: string; hostName: string; images: PinnedImages; from: string; version: string; keep: boolean }): InventoryUpdate {
  const { path, hostName, images } = opts;
  const version = opts.version ? ` (${opts.version})` : '';
  const comment = `# promoted from ${opts.from}${version} on ${new Date().toISOString().slice(0, 19)}Z by all.ts --promote`;
  const lines = `[hosts.${hostName}]\nbackend_image = "${images.backend_image}"\ndashboard_image = "${images.dashboard_image}"`;
  if (opts.keep) return { updated: false, detail: `left as it is (--keep-inventory); pin in ${path}:\n${lines}` };
  const result = pinHostImages(path, hostName, images, comment);
  if (result.ok) return { updated: true, detail: `pinned ${hostName} to the promoted digests in ${path}:\n${result.diff}` };
  return { updated: false, detail: `could not edit ${path} (${result.reason}); pin these yourself:\n${result.lines}` };
}
